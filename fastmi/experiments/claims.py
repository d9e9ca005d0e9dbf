"""Whether a paper's qualitative claim showed up in this run, stated in results.json and the table.

An experiment's ``run`` returns ``"claims": [claim(...).as_dict(), ...]``; the runner prints each one
after the table. ``held`` is True / False when the run's scale can decide the claim, and None when it
cannot (then ``shown_by`` names the preset that can, with its measured time where known).
"""
from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class Claim:
    paper: str              # the claim, in the paper's words or close to them
    measured: str           # the number(s) this run measured that decide it
    held: Optional[bool]    # True / False, or None when this scale cannot decide
    shown_by: Optional[str] = None  # the command/preset that can show it, when held is None or False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def line(self) -> str:
        verdict = {True: "showed up", False: "did NOT show up", None: "cannot be decided at this scale"}[self.held]
        text = f"claim: {self.paper} -- {verdict} ({self.measured})"
        return text + (f"; shown by: {self.shown_by}" if self.shown_by else "")


def claim(paper: str, measured: str, held: Optional[bool], shown_by: Optional[str] = None) -> Claim:
    if held is not None and not isinstance(held, bool):
        held = bool(held)
    return Claim(paper, measured, held, shown_by)


def lines(results: dict) -> list[str]:
    """The printed lines of ``results["claims"]`` (dicts as written to results.json)."""
    return [Claim(**c).line() for c in results.get("claims", [])]
