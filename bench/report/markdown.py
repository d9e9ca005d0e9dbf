"""Small Markdown helpers shared by the generators: tables, number formats, relative links."""
from __future__ import annotations

import os
from pathlib import Path


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table; ``|`` inside a cell is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers)] + [line(r) for r in rows])


def ms(seconds) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def ratio(num, den) -> str:
    return "-" if num is None or den is None else f"{num / den:.1f}x"


def mib(nbytes) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.1f}"


def minutes(seconds) -> str:
    """Wall time as people read it: seconds under two minutes, minutes under two hours, else hours."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def link(text: str, target: Path, doc: Path) -> str:
    """A Markdown link to ``target`` written from the document ``doc`` (both absolute paths)."""
    rel = os.path.relpath(target, doc.parent).replace(os.sep, "/")
    return f"[{text}]({rel})"
