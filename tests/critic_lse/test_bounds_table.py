"""The declarative table of critic bounds: everything derived from it exists and agrees with it, a
bound reads exactly the statistics it declares, and a statistic it did not request cannot be read."""
import inspect
import itertools

import pytest
import torch

import fastmi
import fastmi.functional as F
from fastmi.critic_lse import bounds as B
from fastmi.critic_lse.contract import LSE, POS, SP, STATS
from fastmi.critic_lse.evaluate import evaluate
from fastmi.critic_lse.layout import resolve
from fastmi.critic_lse.stats import RowStats


def option_grid(bound):
    """Every combination of the values that change what a bound reads: clip on/off, flags both ways."""
    choices = []
    for o in bound.options:
        if o.name == "clip":
            choices.append([None, 2.0])
        elif isinstance(o.default, bool):
            choices.append([False, True])
        else:
            choices.append([o.default])
    for values in itertools.product(*choices):
        yield dict(zip((o.name for o in bound.options), values))


class RecordingStats(dict):
    """A statistics dict that records which statistics the bound's formulas read."""

    def __init__(self, n):
        super().__init__({k: torch.randn(n, dtype=torch.float64) for k in range(len(STATS))})
        self.read = set()


@pytest.mark.parametrize("name", sorted(B.BOUNDS))
def test_declared_statistics_are_exactly_the_ones_read(name, monkeypatch):
    bound = B.BOUNDS[name]
    scores = torch.randn(4, 4, dtype=torch.float64)
    layout = resolve(scores, None, None, infonce=bound.infonce_negatives, name=name)
    for opts in option_grid(bound):
        for reg in (False, True):
            opts = dict(opts)
            for inp in bound.inputs:
                opts[inp.name] = inp.check(torch.tensor(float("nan"), dtype=torch.float64)
                                           if inp.name == "running_lme" else inp.default, scores, name)
            declared = set(bound.stats_needed(opts, reg))
            read = set()
            real_getitem = RowStats.__getitem__

            def spy(self, k):
                read.add(k)
                return real_getitem(self, k)

            monkeypatch.setattr(RowStats, "__getitem__", spy)
            stats = {k: torch.randn(4, dtype=torch.float64) for k in declared}
            second = torch.randn(4, dtype=torch.float64) if bound.second_pass else None
            exp_rows = torch.rand(4, dtype=torch.float64)
            evaluate(bound, opts, (0.3 if reg else 0.0, 0.0, "l2"), layout,
                     lambda needed, exp: stats if exp is None else (stats, exp_rows, None), torch.float64, scores.device,
                     second)
            monkeypatch.setattr(RowStats, "__getitem__", real_getitem)
            if bound.exp_shift is not None:  # the exponential term's slot is read by the op, not the formula
                read.add(bound.exp_slot(opts))
            assert read == declared, (name, opts, reg, [STATS[k] for k in read], [STATS[k] for k in declared])


def test_an_unrequested_statistic_cannot_be_read():
    scores = torch.randn(3, 3)
    rs = RowStats({LSE: torch.zeros(3), POS: torch.zeros(3)}, resolve(scores, None, None, infonce=False, name="t"))
    with pytest.raises(LookupError, match="SP was read but not requested"):
        rs[SP]


@pytest.mark.parametrize("name", sorted(B.BOUNDS))
def test_every_bound_has_its_function_module_and_reference(name):
    bound = B.BOUNDS[name]
    fn = getattr(F, name)
    assert fn.__doc__ == bound.doc and name in F.__all__
    params = inspect.signature(fn).parameters
    for o in bound.options:
        assert params[o.name].default == o.default and params[o.name].kind is inspect.Parameter.KEYWORD_ONLY
    positional = [p for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional] == ["scores"] + [i.name for i in bound.inputs]
    assert ("joint" in params) == bound.vector_form
    assert getattr(fastmi.nn, bound.module).bound is bound
    assert "backend" not in inspect.signature(getattr(fastmi.reference, name)).parameters
    if bound.separable:
        assert getattr(F, f"{name}_separable").__name__ == f"{name}_separable"
        assert getattr(fastmi.nn, bound.module + "Separable").bound is bound


def test_module_checks_options_at_construction():
    with pytest.raises(TypeError, match="unexpected option 'clip'"):
        fastmi.nn.InfoNCE(clip=1.0)
    with pytest.raises(TypeError, match="clip_positives must be True or False"):
        fastmi.nn.SMILE(clip_positives="no")
    with pytest.raises(TypeError, match="unexpected option 'update'"):  # MINE sets it from training mode
        fastmi.nn.MINE(update=False)


def test_a_new_table_entry_is_a_public_function():
    """Adding a bound is one entry: the function (and module) come from it. Exercised with a bound
    defined here only: the mean positive score minus the mean negative score."""
    from fastmi.critic_lse.api import make_function

    def gap(rs, o):
        return rs.pos_mean() - rs.neg_exp_mean(0.0).log()

    toy = B.Bound("toy_gap", doc="toy", value=gap, needs=lambda o: (LSE, POS), module="ToyGap")
    fn = make_function(toy)
    s = torch.randn(5, 5, dtype=torch.float64)
    out = fn(s, backend="reference")
    torch.testing.assert_close(out.mi, F.dv(s, backend="reference").mi)
