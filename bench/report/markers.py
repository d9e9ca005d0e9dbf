"""Generated blocks inside Markdown files.

A block is an opening marker, the generated text, and a closing marker, each marker on its own line:

    <!-- report:KIND key=value key=value -->
    ...generated text...
    <!-- /report:KIND -->

``KIND`` names the generator, the ``key=value`` pairs are its arguments (values contain no spaces).
Everything outside the markers is left byte for byte as it is. Markers inside a fenced code block
are examples, not blocks; a block opened in an indented line (inside a list item) gets its
generated lines indented the same way.
"""
from __future__ import annotations

import dataclasses
import re

OPEN = re.compile(r"^<!-- report:(?P<kind>[\w-]+)(?P<args>(?: +[\w-]+=\S+)*) *-->$")
CLOSE = re.compile(r"^<!-- /report:(?P<kind>[\w-]+) *-->$")


class MarkerError(ValueError):
    """A malformed block (unclosed, nested, mismatched closing marker, bad argument)."""


@dataclasses.dataclass
class Block:
    kind: str
    args: dict
    line: int          # 1-based line of the opening marker
    start: int         # index of the first generated line
    end: int           # index of the closing marker line
    opening: str       # the opening marker as written

    @property
    def name(self) -> str:
        """How messages name the block: its opening marker without the comment delimiters."""
        return self.opening[5:-4].strip()


def parse_args(text: str, where: str) -> dict:
    args = {}
    for item in text.split():
        key, _, value = item.partition("=")
        if key in args:
            raise MarkerError(f"{where}: argument {key!r} given twice")
        args[key] = value
    return args


def blocks(lines: list[str], path: str) -> list[Block]:
    """The blocks of a file given as lines (without line ends)."""
    found, current, fenced = [], None, False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if current is None and stripped.startswith("```"):
            fenced = not fenced      # markers shown inside a code block are examples, not blocks
        if fenced:
            continue
        m_open, m_close = OPEN.match(stripped), CLOSE.match(stripped)
        if stripped.startswith("<!-- report:") and not m_open:
            raise MarkerError(f"{path}:{i + 1}: malformed report marker: {stripped}")
        if m_open:
            if current is not None:
                raise MarkerError(f"{path}:{i + 1}: report block opened inside the block of line {current[1] + 1}")
            current = (m_open, i)
        elif m_close:
            if current is None:
                raise MarkerError(f"{path}:{i + 1}: closing marker without an opening one")
            m, j = current
            if m_close["kind"] != m["kind"]:
                raise MarkerError(f"{path}:{i + 1}: closes report:{m_close['kind']}, but line {j + 1} opened "
                                  f"report:{m['kind']}")
            found.append(Block(m["kind"], parse_args(m["args"], f"{path}:{j + 1}"), j + 1, j + 1, i,
                               lines[j].strip()))
            current = None
    if current is not None:
        raise MarkerError(f"{path}:{current[1] + 1}: report:{current[0]['kind']} is never closed")
    return found


def render(text: str, path: str, generate) -> tuple[str, list[Block]]:
    """``text`` with every block's body replaced by ``generate(block)``, each line indented as the
    opening marker is (a block inside a list item); also the blocks whose body changed."""
    lines = text.split("\n")
    out, pos, changed = [], 0, []
    for b in blocks(lines, path):
        indent = lines[b.start - 1][:len(lines[b.start - 1]) - len(lines[b.start - 1].lstrip())]
        body = [(indent + x) if x else x for x in generate(b).rstrip("\n").split("\n")]
        out += lines[pos:b.start]
        if lines[b.start:b.end] != body:
            changed.append(b)
        out += body
        pos = b.end
    out += lines[pos:]
    return "\n".join(out), changed
