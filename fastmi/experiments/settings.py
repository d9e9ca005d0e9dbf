"""An experiment's settings from the command line: ``--set key=value`` parsed into the type of the
config field, range checks that name the setting, and the settings table of ``fastmi run <exp> --help``.

Every config is a dataclass whose defaults are the paper's settings; a field's type is its default's
type, and a list field's item type is that of its default's items (or ``metadata={"item": type}``
when the default is empty). ``validate()`` methods use the checks below, so every error reads
``<setting> must be <what>, got <value>``.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import io
import json
import tokenize
from typing import Callable, Iterable


class SettingError(ValueError):
    """A setting has a value the experiment cannot run with (the message names the setting)."""


# --- checks used by the configs' validate() ----------------------------------------------------------
def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fail(name: str, must: str, value) -> None:
    raise SettingError(f"{name} must be {must}, got {_show(value)}")


def need(ok: bool, name: str, must: str, value) -> None:
    """``name must be <must>, got <value>`` unless ``ok``."""
    if not ok:
        fail(name, must, value)


def int_at_least(cfg, low: int, *names: str) -> None:
    """Each named field is an int >= low ("a positive int" for low = 1)."""
    must = {0: "an int >= 0", 1: "a positive int"}.get(low, f"an int >= {low}")
    for n in names:
        v = getattr(cfg, n)
        need(is_int(v) and v >= low, n, must, v)


def positive(cfg, *names: str) -> None:
    """Each named field is a number > 0."""
    for n in names:
        v = getattr(cfg, n)
        need(is_number(v) and v > 0, n, "a number > 0", v)


def non_negative(cfg, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        need(is_number(v) and v >= 0, n, "a number >= 0", v)


def in_interval(cfg, name: str, low: float, high: float, *, low_open=False, high_open=False) -> None:
    """The field lies in the interval, e.g. (0, 1] for low_open=True."""
    v = getattr(cfg, name)
    ok = is_number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    need(ok, name, f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}", v)


def one_of(cfg, name: str, choices: Iterable) -> None:
    choices = tuple(choices)
    v = getattr(cfg, name)
    need(v in choices, name, "one of " + ", ".join(str(c) for c in choices), v)


def items(cfg, name: str, ok: Callable[[object], bool], what: str, *, nonempty: bool = True) -> None:
    """A list field whose every item passes ``ok`` (``what`` names the items: "positive ints")."""
    v = getattr(cfg, name)
    good = isinstance(v, (tuple, list)) and (len(v) > 0 or not nonempty) and all(ok(x) for x in v)
    need(good, name, f"a {'non-empty ' if nonempty else ''}list of {what}", v)


def positive_ints(x) -> bool:
    return is_int(x) and x > 0


def positive_numbers(x) -> bool:
    return is_number(x) and x > 0


# --- --set parsing ------------------------------------------------------------------------------------
def _type_name(t) -> str:
    return {bool: "true or false", int: "an int", float: "a number", str: "a string"}.get(t, t.__name__)


def item_type(field: dataclasses.Field, default):
    """The item type of a list field: metadata["item"], else the type of the default's items
    (float when ints and floats mix; tuple for nested lists); None when nothing says."""
    if "item" in field.metadata:
        return field.metadata["item"]
    kinds = {type(x) for x in default}
    if not kinds:
        return None
    if kinds <= {int, float} and float in kinds:
        return float
    return kinds.pop() if len(kinds) == 1 else None


def _scalar(raw: str, want, name: str, what: str):
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if want is bool:
        if isinstance(value, bool):
            return value
        if str(raw).strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return str(raw).strip().lower() in ("true", "yes", "1")
    elif want is int:
        if is_int(value):
            return value
    elif want is float:
        if is_number(value):
            return float(value)
    elif want is str:
        return str(raw).strip()
    elif want is tuple:
        if isinstance(value, list):
            return tuple(value)
    elif want is None:
        return value
    raise SettingError(f"{name} must be {what}, got {_show(raw)}")


def parse(field: dataclasses.Field, default, raw: str):
    """The value of ``--set <field>=<raw>`` in the field's type; SettingError naming the setting."""
    name = field.name
    if isinstance(default, (tuple, list)):
        kind = item_type(field, default)
        what = f"a list of {_plural(kind)} (a,b,c or JSON)"
        text = raw.strip()
        if text.startswith("["):
            try:
                values = json.loads(text)
            except json.JSONDecodeError:
                raise SettingError(f"{name} must be {what}, got {_show(raw)} (not valid JSON)") from None
            parts = [json.dumps(v) if not isinstance(v, str) else v for v in values]
        else:
            parts = [p.strip() for p in text.split(",") if p.strip()]
        out = []
        for p in parts:
            try:
                out.append(_scalar(p, kind, name, what))
            except SettingError:
                raise SettingError(f"{name} must be {what}, got {_show(raw)}") from None
        if kind is tuple:
            out = [tuple(x) for x in out]
        return tuple(out)
    want = type(default) if isinstance(default, (bool, int, float, str)) else None
    return _scalar(raw, want, name, _type_name(want))


def _plural(kind) -> str:
    return {bool: "booleans", int: "ints", float: "numbers", str: "strings", tuple: "lists"}.get(kind, "values")


def _show(value) -> str:
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def unknown_setting(module, key: str) -> SettingError:
    names = [f.name for f in dataclasses.fields(module.Config)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return SettingError(f"{module.NAME} has no setting {key!r}{hint} (fastmi run {module.NAME} --help lists them)")


# --- the settings table of --help -------------------------------------------------------------------
def field_comments(cls) -> dict[str, str]:
    """{field: its trailing comment} from the source of ``cls`` and its dataclass bases."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        fields = {f.name for f in dataclasses.fields(klass)}
        current = None
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.NEWLINE or tok.type == tokenize.NL:
                current = None
            elif tok.type == tokenize.NAME and current is None and tok.start[1] == 4 and tok.string in fields:
                current = tok.string
            elif tok.type == tokenize.COMMENT and current is not None:
                out[current] = tok.string.lstrip("#").strip()
    return out


def show_value(v) -> str:
    """A value as it is written after --set (lists as a,b,c; nested lists as JSON)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        if any(isinstance(x, (tuple, list)) for x in v):
            return json.dumps([list(x) for x in v])
        return ",".join(show_value(x) for x in v) if v else "(empty)"
    return str(v)


def _kind(field, default) -> str:
    if isinstance(default, (tuple, list)):
        kind = item_type(field, default)
        return {bool: "bool", int: "int", float: "float", str: "str", tuple: "pair"}.get(kind, "any") + " list"
    return type(default).__name__


def table(module) -> str:
    """The settings of ``module`` (type, default = the paper's, --quick value, meaning), one per line."""
    cfg = module.Config()
    quick = getattr(module, "QUICK", {})
    notes = field_comments(module.Config)
    paper = getattr(cfg, "paper_value", None)
    rows = [("setting", "type", "default (paper)", "--quick", "meaning")]
    for f in dataclasses.fields(cfg):
        d = getattr(cfg, f.name)
        shown = show_value(d)
        if paper is not None and not f.metadata.get("runner"):
            p = paper(f.name, d)
            if p != repr(d):
                shown += f" ({p})"
        meaning = notes.get(f.name, "")
        if f.metadata.get("runner"):
            meaning = "[run setting, not the paper's] " + meaning
        elif f.metadata.get("subset"):
            meaning = "[which jobs run] " + meaning
        rows.append((f.name, _kind(f, d), shown, show_value(quick[f.name]) if f.name in quick else "",
                     meaning.strip()))
    widths = [min(max(len(r[i]) for r in rows), cap) for i, cap in enumerate((24, 10, 34, 26))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:4], widths)]   # a longer value shifts its row only
        lines.append("  " + "  ".join(cells) + "  " + r[4])
    return "\n".join(line.rstrip() for line in lines)
