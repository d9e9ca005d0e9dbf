"""group=: 2 and 3 (and 1) spawned CPU processes (gloo) against the float64 oracle on the concatenated batch.

The contract (fastmi._core.distributed): on every rank the loss and the estimates equal the
single-process values on the concatenation of the shards (so their mean over the ranks does too),
identically on every rank; each local input's gradient is world_size x the oracle's gradient of its
rows; a parameter every rank holds gets gradients whose mean over the ranks is the oracle's. Shards
are uneven, and one rank holds a single row at world size 3. Bad use raises on every rank, and the
ranks stay in step afterwards. One spawn per world size runs everything (conftest.spawned).
"""
import math
import os
import sys

import pytest
import torch

import fastmi.functional as F
import fastmi.nn
import oracle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_worker as W  # noqa: E402

TOL = dict(rtol=1e-10, atol=1e-10, equal_nan=True)
WORLD_SIZES = [1, 2, 3]  # 1: a one-rank group takes the same path
CASES = {c.id: c for c in W.CASES}


@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda w: f"world{w}")
def ranks(request, spawned):
    """(world size, [what every rank computed])."""
    return request.param, spawned(request.param)


@pytest.fixture(scope="module", params=[w for w in WORLD_SIZES if w > 1], ids=lambda w: f"world{w}")
def several_ranks(request, spawned):
    return request.param, spawned(request.param)


def _sizes(world_size, how):
    return (W.ROWS if how == "rows" else W.COLS)[world_size]


def _oracle(case: W.Case) -> dict:
    data = case.inputs()
    inputs = {k: ([t.clone() for t in v] if isinstance(v, list) else v.clone()) for k, v in data.items()}
    leaves = W._leaves(inputs, case.grad)
    out = W.outputs(getattr(oracle, case.fn)(**inputs, **case.kw), leaves)
    if "running_lme" in inputs:
        out["state"] = inputs["running_lme"]
    return out


def _same_everywhere(results, key):
    first = results[0][key]
    for r, res in enumerate(results[1:], 1):
        assert torch.equal(res[key], first) or (torch.isnan(first).all() and torch.isnan(res[key]).all()), \
            f"{key} differs between rank 0 and rank {r}"


def _check(world_size, results, ref, split):
    """Every rank's outputs against the oracle's ``ref``; ``split``: input -> "rows"/"cols"."""
    for key in ("loss", "mi", "entropy", "prior", "state"):
        if key in ref:
            _same_everywhere(results, key)
            for res in results:
                torch.testing.assert_close(res[key].double(), ref[key].double(), **TOL)
    for name, ref_grad in ref["grads"].items():
        got = [res["grads"][name] for res in results]
        if name not in split:  # held by every rank: the mean of the ranks' gradients
            torch.testing.assert_close(torch.stack(got).mean(0), ref_grad, **TOL)
            continue
        sizes = _sizes(world_size, split[name])
        for r, g in enumerate(got):
            want = W.shard(ref_grad, sizes, r)
            if isinstance(g, list):
                for gi, wi in zip(g, want):
                    torch.testing.assert_close(gi, world_size * wi, **TOL)
            else:
                torch.testing.assert_close(g, world_size * want, **TOL)


@pytest.mark.parametrize("case_id", list(CASES))
def test_function_matches_the_concatenated_batch(ranks, case_id):
    world_size, results = ranks
    case = CASES[case_id]
    if case_id not in results[0]["cases"]:
        pytest.skip(f"{case.backend} backend not available")
    _check(world_size, [res["cases"][case_id] for res in results], _oracle(case), case.split)


def test_clip_module_with_learned_temperature(ranks):
    world_size, results = ranks
    data = W.clip_module_data()
    x, y = data["x"].clone().requires_grad_(), data["y"].clone().requires_grad_()
    log_t = torch.tensor(math.log(0.2)).double().requires_grad_()  # the module's parameter: fp32, then .double()
    ref = W.outputs(oracle.infonce_separable(x, y, temperature=log_t.exp(), symmetric=True, normalize=True),
                    {"x": x, "y": y, "log_temperature": log_t})
    got = [res["cases"]["module_clip"] for res in results]
    _check(world_size, got, ref, {"x": "rows", "y": "rows"})


def test_mine_module_moving_average_is_global(ranks):
    world_size, results = ranks
    running = torch.tensor(math.nan, dtype=torch.float64)
    for step, seed in enumerate((31, 32)):
        data = W.scores(seed)
        s = data["scores"].clone().requires_grad_()
        ref = W.outputs(oracle.mine(s, running, positives=data["positives"], momentum=0.7, negatives="all"),
                        {"scores": s})
        ref["state"] = running.clone()
        _check(world_size, [res["cases"]["module_mine"][step] for res in results], ref, {"scores": "rows"})


def test_mmd_prior_draws_per_rank(ranks):
    world_size, results = ranks
    z = W.pair(33)["x"].clone().requires_grad_()
    ref = W.outputs(oracle.mmd_imq(z, W.prior_draws(world_size)), {"z": z})
    _check(world_size, [res["cases"]["mmd_imq_prior"] for res in results], ref, {"z": "rows"})


BAD_USE = {  # case -> (exception type on every rank, what every message says, what the failing rank's says)
    "feature_size": ("ValueError", "must agree on the feature size", None),
    "dtype": ("TypeError", "must agree on the dtype", None),
    "zero_rows": ("ValueError", "passed zero rows", None),
    "local_bad_argument": ("TypeError", "rejected its inputs", "normalize must be True or False"),
    "options": ("ValueError", "must agree on the options", None),
    "positives_range": ("ValueError", "outside", None),
    "nb_mim_shapes": ("ValueError", "must agree on the options", None),
    "nb_dms_zero_rows": ("ValueError", "passed zero rows", None),
    "mmd_features": ("ValueError", "rejected its inputs", "same feature dimension"),
    "mine_dtype": ("TypeError", "must agree on the dtype", None),
}


@pytest.mark.parametrize("case", list(BAD_USE))
def test_bad_use_raises_on_every_rank_without_a_hang(several_ranks, case):
    world_size, results = several_ranks
    kind, everyone, failing = BAD_USE[case]
    last = world_size - 1
    for r, res in enumerate(results):
        got_kind, message = res["errors"][case]
        assert got_kind == kind, (r, got_kind, message)
        own = failing is not None and r == last
        assert (failing if own else everyone) in message, (r, message)
        if not own and everyone in ("passed zero rows", "rejected its inputs"):
            assert f"rank {last} " in message, message
    # the ranks are still in step: a good call after every error gives one value everywhere
    assert len({res["errors"]["after"] for res in results}) == 1


def test_group_without_a_process_group_is_a_clear_error():
    x, y = torch.randn(4, 3), torch.randn(4, 3)
    assert not torch.distributed.is_initialized()
    for call in (lambda: F.infonce_separable(x, y, group="world"), lambda: F.nb_dms(x, group="world"),
                 lambda: F.mine(x, torch.tensor(math.nan), group="world"), lambda: F.mmd_imq(x, y, group="world"),
                 lambda: F.nb_mim([x], group="world"), lambda: fastmi.nn.InfoNCESeparable(group="world")(x, y)):
        with pytest.raises(RuntimeError, match="needs an initialised process group"):
            call()
    with pytest.raises(ValueError, match="group must be None, \"world\" or a torch.distributed ProcessGroup"):
        F.dv_separable(x, y, group="everyone")
    with pytest.raises(TypeError, match="group must be None"):
        fastmi.nn.MINE(group=2)
