"""remine_imagenet (Choi & Lee App C) on a generated class-folder set, and the lazy ImageNet reader."""
import math

import numpy as np
import pytest
import torch

from fastmi.data import DatasetNotFoundError, load_images, locate, write_fake_dataset
from fastmi.data.imagefolder import LazyImages, load_square, read_image_folder
from fastmi.experiments import _benchmark, remine_imagenet

from experiments._experiment_helpers import one_thread, run_tiny  # noqa: F401 (autouse fixture)


def test_fake_imagenet_reads_lazily_as_square_uint8(tmp_path):
    root = write_fake_dataset("imagenet", tmp_path, n_train=7, n_test=4)
    train = load_images("imagenet", "train", root)
    assert len(train.labels) == 7 and train.labels.tolist() == sorted(train.labels.tolist())
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]
    batch = train.images[torch.tensor([0, 3])]
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (2, 3, 224, 224)
    assert tuple(train.images[1:4].shape) == (3, 3, 224, 224)
    small = read_image_folder("test", root, size=16)
    assert tuple(small.images[:].shape) == (4, 3, 16, 16)
    sub = train.subset(3, torch.Generator().manual_seed(0))
    assert len(sub.labels) == 3 and len(sub.images) == 3
    assert locate("imagenet", root)["how"].startswith("class folders")


def test_load_square_is_a_centre_crop(tmp_path):
    from PIL import Image

    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, 10:30] = 255                       # a white centre band, 20 px wide, of a 40 x 20 image
    Image.fromarray(a).save(tmp_path / "x.png")
    out = load_square(tmp_path / "x.png", 20)
    assert out.shape == (3, 20, 20) and out.min() == 255   # the crop keeps only the centre band


def test_missing_imagenet_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="imagenet"):
        locate("imagenet", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="data-dir"):
        locate("imagenet", None)


def test_ce_baseline_reports_log_c_minus_ce():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(6) % 5
    res = _benchmark.loss_of("slb", "ce", 0.0, None)(logits, y, "reference")
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert float(res.loss) == pytest.approx(float(ce))
    assert float(res.mi) == pytest.approx(math.log(5) - float(ce))


def test_claim_only_on_the_whole_imagenet():
    rows = {("clb", "nwj"): {"mi_orig": 0.0, "mi_reg": 1.0, "acc_orig": 0.001, "acc_reg": 0.007}}
    assert remine_imagenet.claim_of(rows, full_data=True)[0]["held"] is True
    assert remine_imagenet.claim_of(rows, full_data=False)[0]["held"] is None
    rows[("clb", "nwj")]["mi_orig"] = 0.9
    assert remine_imagenet.claim_of(rows, full_data=True)[0]["held"] is False


def test_tiny_run_has_every_row_of_table_3(tmp_path):
    data = write_fake_dataset("imagenet", tmp_path / "data", n_train=12, n_test=6)
    res = run_tiny("remine_imagenet", tmp_path / "run", data_dir=data)
    assert set(res["rows"]) == {"slb-ce", "slb-mine", "slb-nwj", "clb-mine", "clb-nwj"}
    assert "mi_reg" not in res["rows"]["slb-ce"] and "mi_reg" in res["rows"]["clb-nwj"]
    text = (tmp_path / "run" / "table.txt").read_text()
    assert "0.0795" in text and "6.147 / 6.110" in text
    jobs = {line.split(",")[0] for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]}
    assert {"slb-mine-lam0-seed0", "clb-mine-lam0-seed0", "slb-ce-lam0-seed0"} <= jobs
    assert res["claims"][0]["held"] is None
