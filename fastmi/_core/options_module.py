"""The base of fastmi's stateless loss modules: keyword options kept for every forward call."""
from __future__ import annotations

from torch import nn


class OptionsModule(nn.Module):
    """An nn.Module whose constructor keywords become ``self.options`` (passed to its function on every
    call, and shown by repr)."""

    def __init__(self, **options):
        super().__init__()
        self.options = options

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())
