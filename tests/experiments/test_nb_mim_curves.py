"""nb_mim_curves (Neural Bayes Figure 5): the band, the convergence epoch, the claim."""
import numpy as np
import pytest

from fastmi.experiments import nb_mim_curves


def test_band_and_epochs_to():
    mean, std = nb_mim_curves.band([[0.2, 0.6, 0.8], [0.4, 0.8, 0.8]])
    np.testing.assert_allclose(mean, [0.3, 0.7, 0.8])
    np.testing.assert_allclose(std, [0.1, 0.1, 0.0])
    assert nb_mim_curves.epochs_to(np.array([0.3, 0.7, 0.78, 0.8])) == 3     # 0.78 >= 0.95 * 0.8
    assert nb_mim_curves.epochs_to(np.array([0.8, 0.5, 0.8])) == 1


def _summary(m_start, m_e95, r_start, r_e95):
    row = lambda s, e: {"full": {"start": s, "epochs_to_95": e, "final": 0.8, "start_std": 0, "final_std": 0,  # noqa: E731
                                 "models": 2}}
    return {"MIM": row(m_start, m_e95), "random encoder": row(r_start, r_e95)}


@pytest.mark.parametrize("args, held", [((0.65, 3, 0.47, 10), True), ((0.45, 3, 0.47, 10), False),
                                        ((0.65, 12, 0.47, 10), False)])
def test_claim(args, held):
    (c,) = nb_mim_curves.claim_of(_summary(*args), quick=False)
    assert c["held"] is held


def test_random_curves_read_the_flattened_columns():
    class R:
        rows = [{"lr": 1e-3, "full_e0": 0.1, "full_e1": 0.2, "first_e0": 0.3, "first_e1": 0.4}]
    assert nb_mim_curves.random_curves(R, "full") == [[0.1, 0.2]]
    assert nb_mim_curves.random_curves(R, "first") == [[0.3, 0.4]]
