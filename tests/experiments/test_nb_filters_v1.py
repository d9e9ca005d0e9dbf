"""nb_filters_v1: MIM-v1 vs MIM-v2 filters (Neural Bayes Fig 3 vs Fig 4): a tiny run and the claim's verdict."""
import json

import pytest

from fastmi.experiments import nb_filters_v1

from experiments._experiment_helpers import make_idx_folder, one_thread, run_tiny  # noqa: F401 (autouse fixture)


def _summary(d1, d2):
    row = {"change_dead": 0.0, "change_live": 0.0, "loss": 0.0, "entropy": 0.0, "prior": 0.0, "rc": 0.0}
    return {"v1": {**row, "dead": d1}, "v2": {**row, "dead": d2}}


@pytest.mark.parametrize("d1, d2, held", [(0.9, 0.1, True), (0.4, 0.1, False), (0.9, 0.95, False)])
def test_claim_is_decided_by_the_dead_fractions(d1, d2, held):
    cfg = nb_filters_v1.Config()
    (c,) = nb_filters_v1.claim_of(_summary(d1, d2), cfg, quick=False)
    assert c["held"] is held
    assert f"v1 {100 * d1:.1f}%" in c["measured"]


def test_no_claim_without_both_priors():
    assert nb_filters_v1.claim_of({"v1": _summary(0.9, 0.1)["v1"]}, nb_filters_v1.Config(), quick=False) == []


def test_tiny_run_trains_one_network_per_prior(tmp_path):
    data = make_idx_folder(tmp_path / "data", n_train=40, n_test=20)
    run_dir = tmp_path / "run"
    res = run_tiny("nb_filters_v1", run_dir, data_dir=data)
    assert set(res["priors"]) == {"v1", "v2"}
    # the two priors are different terms: their values at the end of training differ
    assert res["priors"]["v1"]["prior"] != pytest.approx(res["priors"]["v2"]["prior"])
    header = (run_dir / "metrics.csv").read_text().splitlines()
    jobs = {line.split(",")[0] for line in header[1:]}
    assert jobs == {"v1-alpha4-beta4", "v2-alpha4-beta4"}
    assert (run_dir / "nb_filters_v1.png").is_file()
    saved = json.loads((run_dir / "results.json").read_text())
    assert len(saved["claims"]) == 1 and saved["claims"][0]["held"] in (True, False)
    assert "most filters dead (Fig 3)" in (run_dir / "table.txt").read_text()
