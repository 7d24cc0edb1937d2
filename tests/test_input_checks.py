"""Bad inputs are refused before any work, with one clear line naming the file, through the real monai.bundle CLI."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import warm
from bundle_copies import random_weights_copy

from e2enet_monai.apps.runner import bundle_command
from e2enet_monai.data import DatasetError, load_split, prepare_dataset, write_synthetic
from e2enet_monai.data.checks import check_image, check_label
from e2enet_monai.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
BTCV = ROOT / "bundles/e2enet_btcv_segmentation"
AFFINE = np.diag([0.8, 0.8, 2.5, 1.0])


def _nifti(path, data, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))
    return path


def _ct(shape=(96, 96, 32), seed=0):
    return np.random.default_rng(seed).normal(0.0, 100.0, size=shape).astype(np.float32)


# ---------------------------------------------------------------- the checks themselves (fast)
@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or infinite voxel(s) (the first at index (20, 20, 10))"),
    ("inf", "NaN or infinite voxel(s)"),
    ("constant", "is constant (every voxel is 0)"),
    ("two_d", "is 2-D (shape (96, 96, 1))"),
    ("small", "is too small: (5, 5, 5) voxels"),
    ("channels", "the bundle expects 1 input channel(s), got 2"),
])
def test_check_image_refuses(tmp_path, case, message):
    data = _ct()
    if case == "nan":
        data[20:40, 20:40, 10:30] = np.nan
    elif case == "inf":
        data[0, 0, 0] = np.inf
    elif case == "constant":
        data = np.zeros_like(data)
    elif case == "two_d":
        data = data[..., :1]
    elif case == "small":
        data = data[:5, :5, :5]
    elif case == "channels":
        data = np.stack([data, data], -1)
    path = _nifti(tmp_path / f"{case}.nii.gz", data)
    with pytest.raises(InputError) as err:
        check_image(path, in_channels=1, spacing=(1.5, 1.5, 2.0), patch_size=(32, 48, 48))
    assert message in str(err.value) and str(path) in str(err.value)


def test_check_image_accepts_a_normal_scan(tmp_path):
    assert check_image(_nifti(tmp_path / "ok.nii.gz", _ct()), 1, (1.5, 1.5, 2.0), (32, 48, 48)) == (96, 96, 32)


def test_check_label_refuses_unknown_values_and_other_grids(tmp_path):
    image = _nifti(tmp_path / "img.nii.gz", _ct())
    label = np.zeros((96, 96, 32), np.uint8)
    label[10:20, 10:20, 5:10] = 99
    bad = _nifti(tmp_path / "lbl99.nii.gz", label)
    with pytest.raises(InputError, match=r"lbl99.nii.gz holds value\(s\) \[99\] outside this bundle's labels"):
        check_label(bad, image, range(14))
    shifted = _nifti(tmp_path / "grid.nii.gz", np.zeros((96, 96, 31), np.uint8))
    with pytest.raises(InputError, match=r"grid.nii.gz is on another grid than its image .*img.nii.gz: shape"):
        check_label(shifted, image, range(14))


def test_prepare_data_refuses_label_values_outside_the_dataset(tmp_path):
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=2, num_test=0, shape=(32, 32, 12))
    path = raw / "RawData/Training/label/label0002.nii.gz"
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 99
    nib.save(nib.Nifti1Image(data, img.affine), str(path))
    with pytest.raises(DatasetError, match=r"case 0002: label .*label0002.nii.gz holds value\(s\) \[99\]"):
        prepare_dataset("btcv", raw, tmp_path / "datalist.json")
    assert not (tmp_path / "datalist.json").exists()


def test_invalid_datalist_json_names_the_file(tmp_path):
    bad = tmp_path / "datalist.json"
    bad.write_text('{"training": [ {"image": "a.nii.gz",, } ]}')
    with pytest.raises(DatasetError, match=rf"datalist {bad} is not valid JSON \(.*line 1 column"):
        load_split(bad, 0, "train")


# ---------------------------------------------------------------- through python -m monai.bundle run
@pytest.fixture(scope="module")
def weighted_bundle(tmp_path_factory):
    """The BTCV bundle with the CPU demo network written into its configs and random weights (no training)."""
    return random_weights_copy(BTCV, tmp_path_factory.mktemp("bad_inputs"), ["train.json", "inference.json"])


def _run(bundle, configs, overrides, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return warm.run(bundle_command(bundle, configs, overrides), capture_output=True, text=True, env=env,
                    timeout=timeout)


def _last_line(proc):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Failed to evaluate" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()  # MONAI's own warnings may come first; our message comes last
    assert lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.parametrize("case, message", [
    ("nan", "NaN or infinite voxel(s)"),
    ("constant", "is constant (every voxel is 0)"),
    ("small", "is too small: (5, 5, 5) voxels"),
    ("two_d", "is 2-D (shape (96, 96, 1))"),
    ("missing", "does not exist"),
    ("truncated", "cannot be read as NIfTI"),
])
def test_inference_refuses_bad_images_before_any_work(weighted_bundle, tmp_path, case, message):
    data = _ct()
    if case == "nan":
        data[20:40, 20:40, 10:30] = np.nan
    elif case == "constant":
        data = np.zeros_like(data)
    elif case == "small":
        data = data[:5, :5, :5]
    elif case == "two_d":
        data = data[..., :1]
    path = tmp_path / f"{case}.nii.gz"
    if case != "missing":
        _nifti(path, data)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    out = tmp_path / "out"
    line = _last_line(_run(weighted_bundle, ["inference.json"], {"datalist": [str(path)], "output_dir": str(out)}))
    assert message in line and str(path) in line, line
    assert not out.exists()


def test_inference_refuses_existing_outputs_before_inference_starts(weighted_bundle, tmp_path):
    good = [_nifti(tmp_path / f"in/ct{i}.nii.gz", _ct(seed=i)) for i in range(2)]
    out = tmp_path / "out"
    existing = out / "ct1/ct1_seg.nii.gz"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"earlier result")
    proc = _run(weighted_bundle, ["inference.json"], {"datalist": [str(p) for p in good], "output_dir": str(out)})
    line = _last_line(proc)
    assert f"{existing} already exist(s)" in line and "--overwrite True" in line, line
    assert "SupervisedEvaluator" not in proc.stdout  # refused before the evaluator ran a single case
    assert existing.read_bytes() == b"earlier result" and not (out / "ct0").exists()


def test_inference_names_weights_that_do_not_fit_the_configs(weighted_bundle, tmp_path):
    image = _nifti(tmp_path / "ct.nii.gz", _ct())
    proc = _run(weighted_bundle, ["inference.json"], {"datalist": [str(image)], "output_dir": str(tmp_path / "o"),
                                                      "channels": [16, 32, 64, 128]})
    line = _last_line(proc)
    assert f"weights {weighted_bundle / 'models/model.pt'} do not fit the network the configs build (E2ENet)" in line
    assert "(8, 1, 1, 3, 3) in the weights, (16, 1, 1, 3, 3) in the configs" in line and "channels" in line, line


def test_topk_inference_without_its_weights_says_how_to_make_them(weighted_bundle, tmp_path):
    image = _nifti(tmp_path / "ct.nii.gz", _ct())
    proc = _run(weighted_bundle, ["inference.json", "inference_topk.json"],
                {"datalist": [str(image)], "output_dir": str(tmp_path / "o")})
    line = _last_line(proc)
    assert f"weights {weighted_bundle / 'models/model_topk.pt'} not found" in line
    assert "train_global.json, then train_topk.json" in line, line


@pytest.mark.parametrize("overrides, messages", [
    ({"sparse_death_rate": 1.5},
     ["--sparse_death_rate must be a number in [0.001 (the final death rate), 1), got 1.5"]),
    ({"sparse_density": 2, "sparse_growth": "magnitude", "sparse_channel_multiple": 8},
     ["--sparse_density must be a number in (0, 1], got 2",
      "--sparse_growth must be one of ('random', 'gradient'), got 'magnitude'",
      "--sparse_channel_multiple must be 1 with kernel masks (a multiple of input channels needs structure "
      "'channel'), got 8 with structure 'kernel'"]),
    ({"patch_size": [64, 64], "spacing": [1.5, 0, 1.5]},
     ["--spacing must be 3 numbers > 0 (mm per voxel), got [1.5, 0, 1.5]",
      "--patch_size must be 3 whole numbers > 0 (voxels), got [64, 64]"]),
])
def test_training_names_wrong_ids_before_reading_data(weighted_bundle, tmp_path, overrides, messages):
    # the dataset folder does not exist: the ids are checked first, so their error is the one printed
    out = tmp_path / "run"
    proc = _run(weighted_bundle, ["train.json"], {"dataset_dir": str(tmp_path / "no_data"),
                                                  "ckpt_dir": str(out / "models"), **overrides})
    line = _last_line(proc)
    assert all(m in line for m in messages), line
    assert "Failed to instantiate" not in proc.stderr and not out.exists()


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer_name": "adam"}, "--optimizer_name must be one of ('sgd', 'adamw'), got 'adam'."),
    ({"learning_rate": -0.01}, "--learning_rate must be a number > 0, got -0.01."),
    ({"sparse_training": "false"}, "--sparse_training false -> --sparse_training False"),
])
def test_training_names_a_wrong_optimizer_or_boolean_id(weighted_bundle, tmp_path, overrides, message):
    raw = _tiny_dataset(tmp_path)
    out = tmp_path / "run"
    proc = _run(weighted_bundle, ["train.json"], {"dataset_dir": str(raw), "ckpt_dir": str(out / "models"),
                                                  "output_dir": str(out / "eval"), "num_workers": 0, **overrides})
    line = _last_line(proc)
    assert message in line and "Failed to instantiate" not in proc.stderr, line
    assert not (out / "models").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"patch_size": [48, 48]}, "--patch_size must be 3 whole numbers > 0 (voxels), got [48, 48]."),
    ({"tta": True, "mirror_axes": [0, 3]}, "--mirror_axes must be distinct spatial axes out of 0, 1, 2, got [0, 3]."),
])
def test_inference_names_wrong_spatial_ids_before_loading_weights(weighted_bundle, tmp_path, overrides, message):
    image = _nifti(tmp_path / "ct.nii.gz", _ct())
    proc = _run(weighted_bundle, ["inference.json"], {"datalist": [str(image)], "output_dir": str(tmp_path / "o"),
                                                      **overrides})
    line = _last_line(proc)
    assert line == f"error: {message}", line
    assert not (tmp_path / "o").exists()


def _tiny_dataset(tmp_path):
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=5, num_test=0, shape=(32, 32, 16))
    prepare_dataset("btcv", raw, raw / "datalist.json")
    return raw


def _datalist_with(raw, label=None, image=None):
    """A hand-written datalist (as a user would write one, not through prepare_data) with one case replaced."""
    data = json.loads((raw / "datalist.json").read_text())
    case = data["training"][0]
    if label is not None:
        case["label"] = os.path.relpath(label, raw)
    if image is not None:
        case["image"] = os.path.relpath(image, raw)
    (raw / "datalist.json").write_text(json.dumps(data))
    return raw / case["label"] if label is None else label


@pytest.mark.parametrize("case", ["label99", "grid", "json", "channels"])
def test_training_refuses_bad_data_before_caching(weighted_bundle, tmp_path, case):
    raw = _tiny_dataset(tmp_path)
    first = json.loads((raw / "datalist.json").read_text())["training"][0]
    image = raw / first["image"]
    if case == "label99":
        img = nib.load(str(raw / first["label"]))
        data = np.asarray(img.dataobj).copy()
        data[0, 0, 0] = 99
        bad = _nifti(tmp_path / "lbl99.nii.gz", data, img.affine)
        _datalist_with(raw, label=bad)
        expected = f"label {bad} holds value(s) [99] outside this bundle's labels"
    elif case == "grid":
        img = nib.load(str(raw / first["label"]))
        bad = _nifti(tmp_path / "short.nii.gz", np.asarray(img.dataobj)[:, :, :10], img.affine)
        _datalist_with(raw, label=bad)
        expected = f"label {bad} is on another grid than its image {image}"
    elif case == "json":
        (raw / "datalist.json").write_text("{not json")
        expected = f"datalist {raw / 'datalist.json'} is not valid JSON"
    else:
        two = _nifti(tmp_path / "two.nii.gz", np.stack([_ct((32, 32, 16))] * 2, -1), nib.load(str(image)).affine)
        _datalist_with(raw, image=two)
        expected = f"the bundle expects 1 input channel(s), got 2: {two} has 2 channel(s)"
    out = tmp_path / "run"
    proc = _run(weighted_bundle, ["train.json"], {"dataset_dir": str(raw), "ckpt_dir": str(out / "models"),
                                                  "output_dir": str(out / "eval"), "epochs": 1, "num_workers": 0})
    line = _last_line(proc)
    assert expected in line, line
    assert not (out / "models").exists()
