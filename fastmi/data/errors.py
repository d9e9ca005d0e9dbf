"""Errors of fastmi's dataset loaders."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not on disk; the message says what to install or where to put the files."""
