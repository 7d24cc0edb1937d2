import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import warm

from e2enet_monai.data import DatasetError, load_split, prepare_dataset, write_synthetic
from e2enet_monai.transforms import BraTSRegionsd, RegionsToBraTSLabeld, ReorderChannelsd

ROOT = Path(__file__).resolve().parents[1]
SMALL = (32, 32, 12)


def test_phantoms_are_deterministic(tmp_path):
    a = write_synthetic("btcv", tmp_path / "a", num_train=3, num_test=2, shape=SMALL, seed=3)
    b = write_synthetic("btcv", tmp_path / "b", num_train=3, num_test=2, shape=SMALL, seed=3)
    c = write_synthetic("btcv", tmp_path / "c", num_train=3, num_test=2, shape=SMALL, seed=4)
    rel = "RawData/Training/img/img0002.nii.gz"
    load = lambda p: np.asarray(nib.load(str(p)).dataobj)  # noqa: E731
    assert np.array_equal(load(a / rel), load(b / rel))
    assert not np.array_equal(load(a / rel), load(c / rel))
    # every third training case and every second test case are stored flipped (LPS), with matching affines
    codes = [nib.aff2axcodes(nib.load(str(a / p)).affine) for p in
             ("RawData/Training/img/img0003.nii.gz", "RawData/Testing/img/img0062.nii.gz",
              "RawData/Testing/img/img0061.nii.gz")]
    assert codes == [("L", "P", "S"), ("L", "P", "S"), ("R", "A", "S")]


@pytest.mark.parametrize("kind", ["btcv", "amos"])
def test_every_phantom_organ_stays_mostly_visible(kind):
    """Organs are drawn largest first: none loses half of its ellipsoid to a later one (the gallbladder once lost
    most of itself under the liver, and no network could learn it)."""
    from e2enet_monai.data.labels import AMOS_LABELS, BTCV_LABELS
    from e2enet_monai.data.phantoms import _ORGANS, ct_phantom

    labels, shape = (BTCV_LABELS if kind == "btcv" else AMOS_LABELS), (128, 128, 48)
    for seed in range(4):
        _, label = ct_phantom(labels, shape, seed=seed)
        counts = np.bincount(label.ravel(), minlength=len(labels))
        for value, name in enumerate(labels[1:], 1):
            nominal = 4 / 3 * np.pi * np.prod(_ORGANS[name][1]) * np.prod(shape)
            assert counts[value] >= 0.5 * nominal, (seed, name, counts[value], round(nominal))


def test_btcv_folds_and_fixed_split(tmp_path):
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=30, num_test=1, shape=SMALL)
    dl = prepare_dataset("btcv", raw, tmp_path / "lists/datalist.json", read_data=False)
    data = json.loads(dl.read_text())
    assert len(data["training"]) == 30 and len(data["testing"]) == 1
    assert sorted(e["case"] for e in data["validation"]) == [f"{i:04d}" for i in range(35, 41)]
    assert sorted(e["fold"] for e in data["training"]) == sorted([f for f in range(5)] * 6)
    assert not data["training"][0]["image"].startswith("/")  # relative to the datalist folder
    train, val = load_split(dl, -1, "train"), load_split(dl, -1, "val")
    assert (len(train), len(val)) == (24, 6) and Path(val[0]["image"]).is_file()
    folds = [load_split(dl, f, "val") for f in range(5)]
    assert sorted(e["case"] for f in folds for e in f) == sorted(e["case"] for e in data["training"])
    assert not {e["case"] for e in load_split(dl, 2, "train")} & {e["case"] for e in folds[2]}
    with pytest.raises(ValueError, match="fold must be"):
        load_split(dl, 7, "val")


def test_amos_excludes_mri_and_keeps_official_validation(tmp_path):
    raw = write_synthetic("amos", tmp_path, num_train=4, num_val=2, num_test=1, num_mri=2, shape=SMALL)
    data = json.loads(prepare_dataset("amos", tmp_path, tmp_path / "dl.json").read_text())
    cases = [e["case"] for e in data["training"]]
    assert len(cases) == 4 and all(int(c.split("_")[1]) < 500 for c in cases)
    assert len(data["validation"]) == 2 and len(data["testing"]) == 1
    assert raw.name == "amos22"


@pytest.mark.parametrize("kind, convention",
                         [("brats2021", "brats2021"), ("brats2023", "brats2023"), ("msd_brain", "msd")])
def test_brats_layouts(tmp_path, kind, convention):
    write_synthetic(kind, tmp_path, num_cases=5, shape=(24, 24, 16))
    data = json.loads(prepare_dataset(kind, tmp_path, tmp_path / "dl.json").read_text())
    entry = data["training"][0]
    assert entry["brats_convention"] == convention
    if kind == "msd_brain":
        assert entry["channel_order"] == [2, 1, 3, 0] and isinstance(entry["image"], str)
    else:
        assert len(entry["image"]) == 4
        suffixes = [Path(p).name.rsplit("_" if kind == "brats2021" else "-", 1)[1] for p in entry["image"]]
        assert suffixes == (["t1ce.nii.gz", "t1.nii.gz", "t2.nii.gz", "flair.nii.gz"] if kind == "brats2021"
                            else ["t1c.nii.gz", "t1n.nii.gz", "t2w.nii.gz", "t2f.nii.gz"])


def test_errors_name_the_bad_case(tmp_path):
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=3, num_test=0, shape=SMALL)
    label = raw / "RawData/Training/label/label0002.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((30, 32, 12), np.uint8), np.eye(4)), str(label))
    with pytest.raises(DatasetError, match=r"case 0002: .*label0002.nii.gz has grid shape \(30, 32, 12\)"):
        prepare_dataset("btcv", raw, tmp_path / "dl.json")
    label.unlink()
    with pytest.raises(DatasetError, match=r"case 0002: file .*label0002.nii.gz does not exist"):
        prepare_dataset("btcv", raw, tmp_path / "dl.json")
    write_synthetic("btcv", tmp_path / "raw", num_train=3, num_test=0, shape=SMALL)
    img = raw / "RawData/Training/img/img0003.nii.gz"
    img.write_bytes(img.read_bytes()[:300])
    with pytest.raises(DatasetError, match=r"case 0003: cannot read .*img0003.nii.gz"):
        prepare_dataset("btcv", raw, tmp_path / "dl.json")
    assert not (tmp_path / "dl.json").exists()  # nothing half-written


def test_prepare_never_overwrites_unless_asked(tmp_path):
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=2, num_test=0, shape=SMALL)
    out = tmp_path / "dl.json"
    out.write_text("keep me")
    with pytest.raises(FileExistsError):
        prepare_dataset("btcv", raw, out)
    assert out.read_text() == "keep me"
    prepare_dataset("btcv", raw, out, overwrite=True)
    assert json.loads(out.read_text())["dataset"] == "btcv"


def test_cli_tools(tmp_path):
    run = lambda *a: warm.run([sys.executable, *a], capture_output=True, text=True, timeout=300)  # noqa: E731
    out = run(str(ROOT / "tools/make_synthetic.py"), "brats2023", str(tmp_path), "--num_cases", "2",
              "--shape", "[16,16,8]")
    assert out.returncode == 0, out.stderr
    out = run(str(ROOT / "tools/prepare_data.py"), "brats2023", str(tmp_path))
    assert out.returncode == 0 and (tmp_path / "datalist.json").is_file(), out.stderr
    out = run(str(ROOT / "tools/prepare_data.py"), "brats2023", str(tmp_path))
    assert out.returncode != 0 and "exists; pass overwrite" in out.stderr
    out = run(str(ROOT / "tools/prepare_data.py"), "btcv", str(tmp_path), "--output", str(tmp_path / "x.json"))
    assert out.returncode != 0 and "is not a BTCV folder" in out.stderr


@pytest.mark.parametrize("convention, values", [("brats2021", (1, 2, 4)), ("brats2023", (1, 2, 3)), ("msd", (2, 1, 3))])
def test_brats_regions_roundtrip(convention, values):
    ncr, ed, et = values
    label = torch.tensor([0, ncr, ed, et, 0], dtype=torch.float32).view(1, 5, 1, 1)
    regions = BraTSRegionsd("label", convention=convention)({"label": label})["label"]
    assert regions[:, :, 0, 0].tolist() == [[0, 1, 0, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 0]]
    back = RegionsToBraTSLabeld("pred", enhancing_value=4)({"pred": regions})["pred"]
    assert back.flatten().tolist() == [0, 1, 2, 4, 0] and back.dtype == torch.uint8
    with pytest.raises(ValueError, match="outside the"):
        BraTSRegionsd("label", convention=convention)({"label": torch.full((1, 2, 1, 1), 7.0)})


def test_label_map_keeps_prediction_meta():
    from monai.data import MetaTensor

    pred = MetaTensor(torch.ones(3, 2, 2, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])),
                      meta={"filename_or_obj": "/data/case_t1c.nii.gz"})
    out = RegionsToBraTSLabeld("pred")({"pred": pred})["pred"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "/data/case_t1c.nii.gz"
    assert torch.equal(out.affine, pred.affine) and out.unique().tolist() == [3]


def test_per_case_convention_and_channel_order():
    label = torch.tensor([3.0]).view(1, 1, 1, 1)
    d = BraTSRegionsd("label", convention="brats2021")({"label": label, "brats_convention": "brats2023"})
    assert d["label"].flatten().tolist() == [1, 1, 1]
    img = torch.arange(4.0).view(4, 1, 1, 1)
    reordered = ReorderChannelsd("image")({"image": img, "channel_order": [2, 1, 3, 0]})["image"]
    assert reordered.flatten().tolist() == [2, 1, 3, 0]
