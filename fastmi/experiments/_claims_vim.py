"""Whether the Variational InfoMax paper's (Crescimanna & Graham) qualitative claims showed up in a run,
decided from its results:

- vim_mnist (the table's baseline and first VIB / VIM): test error VIM < VIB < baseline (Table 1);
  CW-L2 distance baseline < VIB < VIM (Table 2; None when the attack was skipped or nothing
  succeeded); ARI and Hoyer sparsity highest for VIM (Table 3). Differences smaller than the
  run can resolve still count: the verdict is the ordering of the measured numbers.
- vim_cifar: the lowest test error over the grid is VIM's, not VIB's (Fig 4a).

``scaled``: the run's settings differ from the paper's (``runner.differences``); a claim such a run
did not show names the preset that would (its time when measured). At the paper's settings a claim
that did not show up names nothing.
"""
from __future__ import annotations

import math

from .claims import claim

NOT_MEASURED = "not measured"


def _f(v, spec=".2f"):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table_trio(plan_: dict, rows: dict):
    """The rows of the table's first baseline, VIB and VIM models, or None when one is missing."""
    pick = {}
    for job, (spec, _, _, role) in plan_.items():
        if role == "table":
            pick.setdefault(spec.objective, rows[job])
    if not {"baseline", "vib", "vim"} <= set(pick):
        return None
    return pick["baseline"], pick["vib"], pick["vim"]


def mnist(plan_: dict, rows: dict, scaled: bool) -> list:
    trio = table_trio(plan_, rows)
    if trio is None:
        return []
    b, vib, vim = trio
    shown = f"fastmi run vim_mnist (the paper's settings, 200 epochs; {NOT_MEASURED})"
    out = []
    held = vim["test_error"] < vib["test_error"] < b["test_error"]
    out.append(claim("test error VIM < VIB < baseline (Table 1)",
                     f"test error VIM {_f(vim['test_error'])}%, VIB {_f(vib['test_error'])}%, baseline "
                     f"{_f(b['test_error'])}%", held, None if held or not scaled else shown))
    l2 = [r.get("attack_l2") for r in (b, vib, vim)]
    if all(v is not None and math.isfinite(v) for v in l2):
        held = l2[0] < l2[1] < l2[2]
        out.append(claim("the CW-L2 attack needs a larger change for VIM than VIB, and for VIB than the baseline "
                         "(Table 2)", f"mean L2 baseline {_f(l2[0])}, VIB {_f(l2[1])}, VIM {_f(l2[2])}", held,
                         None if held or not scaled else shown))
    else:
        out.append(claim("the CW-L2 attack needs a larger change for VIM than VIB, and for VIB than the baseline "
                         "(Table 2)", "no attack distances (the attack was skipped, or no attack succeeded)", None,
                         shown))
    held = vim["ari"] > max(vib["ari"], b["ari"]) and vim["hoyer"] > max(vib["hoyer"], b["hoyer"])
    out.append(claim("VIM's codes cluster best (ARI) and are the sparsest (Hoyer) (Table 3)",
                     f"ARI VIM {_f(vim['ari'], '.3f')}, VIB {_f(vib['ari'], '.3f')}, baseline {_f(b['ari'], '.3f')}; "
                     f"Hoyer VIM {_f(vim['hoyer'], '.3f')}, VIB {_f(vib['hoyer'], '.3f')}, baseline "
                     f"{_f(b['hoyer'], '.3f')}", held, None if held or not scaled else shown))
    return [c.as_dict() for c in out]


def cifar(plan_: dict, rows: dict, scaled: bool) -> list:
    errs = {o: min(rows[j]["test_error"] for j, s in plan_.items() if s.objective == o)
            for o in ("vim", "vib") if any(s.objective == o for s in plan_.values())}
    if len(errs) < 2:
        return []
    held = errs["vim"] < errs["vib"]
    return [claim("VIM reaches a lower test error than VIB (Fig 4a)",
                  f"lowest test error over the grid: VIM {_f(errs['vim'])}%, VIB {_f(errs['vib'])}%", held,
                  None if held or not scaled else f"fastmi run vim_cifar --data-dir DIR (the paper's settings: a GPU; "
                                    f"{NOT_MEASURED})").as_dict()]
