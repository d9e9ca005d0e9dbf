"""examples/ddp_contrastive.py: DDP training on 2 gloo processes with fastmi's group= ends with the
parameters of single-process training on the same (global) batch (each rank's half of it is half
the batch: the single process trains on the doubled per-rank batch). The batch is odd, so the two
shards differ in size. The torchrun command line itself is exercised by the slow test."""
import os
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dist_worker as W  # noqa: E402

STEPS, BATCH = W.DDP_STEPS, W.DDP_BATCH


def _assert_same_training(distributed_params, single_params):
    assert distributed_params.keys() == single_params.keys()
    for k, v in single_params.items():
        torch.testing.assert_close(distributed_params[k], v, rtol=1e-10, atol=1e-12, msg=k)


def test_ddp_training_matches_single_process_on_the_doubled_batch(spawned):
    ranks = [res["ddp"] for res in spawned(2)]  # dist_worker.everything ran the example on 2 ranks
    single, history = W.load_example().train(STEPS, BATCH)
    moved = max(float((single[k] - v).abs().max()) for k, v in W.load_example().train(0, BATCH)[0].items())
    assert moved > 1e-3  # the steps really changed the parameters
    for params, ddp_history in ranks:
        _assert_same_training(params, single)
        torch.testing.assert_close(torch.tensor(ddp_history), torch.tensor(history), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_torchrun_command_line(tmp_path):
    run = dict(capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(W.EXAMPLE)))
    args = [W.EXAMPLE, "--steps", str(STEPS), "--batch", str(BATCH)]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args,
                          "--out", str(tmp_path / "ddp.pt")], **run)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "single.pt")], **run)
    assert single.returncode == 0, single.stderr[-3000:]
    assert "(2 processes)" in ddp.stdout and "(1 process)" in single.stdout
    _assert_same_training(torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt"))
    again = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "single.pt")], **run)
    assert again.returncode == 2 and "exists" in again.stderr and not again.stderr.count("Traceback")
