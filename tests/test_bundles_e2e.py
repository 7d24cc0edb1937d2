"""End to end through `python -m monai.bundle run`: train -> evaluate -> inference for every bundle on phantoms."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from docs_commands import docs_command
from monai.bundle import ConfigParser
from warm import run_bundle

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES, TOPK_CPU_OVERRIDES
from e2enet_monai.apps.runner import read_dice_table
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundles_dir
from e2enet_monai.networks import E2ENet

pytestmark = pytest.mark.slow
NAMES = sorted(SHIPPED_BUNDLES)
NET = {k: CPU_DEMO_OVERRIDES[k] for k in ("channels", "strides", "patch_size")}


def test_non_editable_install_finds_its_own_package_and_bundles(installed, demo):
    """``pip install .`` (a wheel, not ``-e``) in a fresh environment: the package and the bundles it runs come
    from that environment, not from this checkout, and ``e2enet-demo`` ran the whole journey from another folder."""
    where = json.loads((installed[0] / "installed.json").read_text())
    checkout = Path(__file__).resolve().parents[1]
    assert not Path(where["package"]).is_relative_to(checkout) and "site-packages" in where["package"]
    assert Path(where["bundles"]).parts[-3:] == ("share", "e2enet-monai", "bundles")
    assert Path(where["bundles"]).is_relative_to(Path(where["bin"]).parent)
    import e2enet_monai

    assert where["version"] == e2enet_monai.__version__
    work, bundle, _ = demo("btcv")
    assert (bundle / "models/model.pt").is_file() and (bundle / "models/model_topk.pt").is_file()
    assert sorted(p.name for p in (work / "segmentations").iterdir()) == ["img0061", "img0062"]


def mean(values):
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values)


@pytest.mark.parametrize("name", NAMES)
def test_trained_bundle_reaches_dice_on_held_out_phantoms(demo, name):
    _, bundle, table = demo(name)
    assert mean(table.values()) >= 0.6, table
    header = (bundle / "eval/val_mean_dice_raw.csv").read_text().splitlines()[0].split(",")
    assert header == ["filename", *table, "mean"]  # columns named after the classes, not class0..classN


@pytest.mark.parametrize("name", NAMES)
def test_untrained_network_scores_near_zero(demo, name, tmp_path):
    work, bundle, _ = demo(name)
    fresh = tmp_path / bundle.name
    shutil.copytree(bundle, fresh, ignore=shutil.ignore_patterns("eval"))
    parser = ConfigParser()
    parser.read_config(str(fresh / "configs/inference.json"))
    parser.update(NET)
    torch.manual_seed(0)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, fresh / "models/model.pt")
    overrides = {**CPU_DEMO_OVERRIDES, "dataset_dir": str(work / "data")}
    run_bundle(fresh, ["train.json", "evaluate.json"], overrides)
    meta = json.loads((fresh / "configs/metadata.json").read_text())
    table = read_dice_table(fresh / "eval", meta["network_data_format"]["outputs"]["pred"]["channel_def"])
    assert mean(table.values()) < 0.15, table


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_is_sparse_at_target_density(demo, name):
    _, bundle, _ = demo(name)
    ckpt = torch.load(bundle / "models/model.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) == {"model", "sparse"}
    in_ch = 4 if name == "brats" else 1
    out_ch = {"btcv": 14, "amos": 16, "brats": 3}[name]
    net = E2ENet(3, in_ch, out_ch, channels=NET["channels"], strides=NET["strides"])
    net.load_state_dict(ckpt["model"])
    state = ckpt["model"]
    # an active kernel may still be 0 only if training could not move it: regrown kernels start at 0, and one whose
    # input channel is itself fed only by zero kernels gets exactly zero gradient (paper behaviour); any other zero
    # active kernel would mean the masks kept it from training
    torch.manual_seed(0)
    net.train()
    outputs = net(torch.randn(1, in_ch, *NET["patch_size"]))
    sum(o.square().mean() for o in (outputs if isinstance(outputs, list) else [outputs])).backward()
    params = dict(net.named_parameters())
    active = trained = 0
    for pname in net.mesh_parameter_names():
        mask = ckpt["sparse"]["masks"][pname]
        assert int(mask.sum()) == max(1, round(0.2 * mask.numel())), pname
        nonzero = state[pname].flatten(2).ne(0).any(2)
        assert not (nonzero & ~mask).any(), pname  # no weight outside the mask
        reachable = params[pname].grad.flatten(2).ne(0).any(2)
        assert not (mask & ~nonzero & reachable).any(), pname
        active, trained = active + int(mask.sum()), trained + int(nonzero.sum())
    assert trained >= 0.9 * active, (trained, active)
    assert all(not v.is_cuda for v in state.values())


def _inputs_and_outputs(work, name):
    out_dir = work / "segmentations"
    outputs = sorted(out_dir.rglob("*_seg.nii.gz"))
    assert len(outputs) == 2
    pairs = []
    for out in outputs:
        case = out.parent.name
        candidates = [p for p in (work / "data").rglob(f"{case}.nii.gz")]
        assert len(candidates) == 1, (case, candidates)
        pairs.append((candidates[0], out))
    return pairs


@pytest.mark.parametrize("name", NAMES)
def test_inference_writes_uint8_on_the_input_grid(demo, name):
    work, _, _ = demo(name)
    orientations = set()
    for src, out in _inputs_and_outputs(work, name):
        img, seg = nib.load(str(src)), nib.load(str(out))
        assert seg.shape == img.shape[:3]
        assert np.allclose(seg.affine, img.affine, atol=1e-4)
        assert seg.get_data_dtype() == np.uint8
        values = set(np.unique(np.asarray(seg.dataobj)).tolist())
        assert values - {0} and values <= set(range({"btcv": 14, "amos": 16, "brats": 4}[name]))
        orientations.add(nib.aff2axcodes(img.affine))
    assert any(o != ("R", "A", "S") for o in orientations)  # at least one non-RAS input
    if name != "brats":  # CT phantoms are anisotropic (0.8 x 0.8 x 2.5 mm)
        assert not np.allclose(nib.load(str(src)).header.get_zooms()[:3], 1.0)


@pytest.mark.parametrize("name", NAMES)
def test_inference_refuses_to_overwrite(demo, name):
    work, bundle, _ = demo(name)
    out_dir = work / "segmentations"
    outputs = sorted(out_dir.rglob("*_seg.nii.gz"))
    before = {p: p.stat().st_mtime_ns for p in outputs}
    src = [str(s) for s, _ in _inputs_and_outputs(work, name)]
    if name == "brats":
        from e2enet_monai.data import brats_image_lists

        src = brats_image_lists(work / "data")[:2]
    proc = run_bundle(bundle, ["inference.json"], {**NET, "datalist": src, "output_dir": str(out_dir)}, check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "already exist(s)" in last and all(str(p) in last for p in outputs), last
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    run_bundle(bundle, ["inference.json"], {**NET, "datalist": src, "output_dir": str(out_dir), "overwrite": True})
    assert all(p.stat().st_mtime_ns != before[p] for p in outputs)


def test_missing_input_file_is_named(demo, tmp_path):
    _, bundle, _ = demo("btcv")
    missing = str(tmp_path / "nope.nii.gz")
    proc = run_bundle(bundle, ["inference.json"], {**NET, "datalist": [missing], "output_dir": str(tmp_path)},
                      check=False)
    assert proc.returncode != 0 and f"error: image {missing} does not exist." == proc.stderr.strip().splitlines()[-1]


def test_corrupt_input_fails_without_output(demo, tmp_path):
    work, bundle, _ = demo("btcv")
    src = sorted((work / "data/RawData/Testing/img").glob("*.nii.gz"))[0]
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    out = tmp_path / "out"
    proc = run_bundle(bundle, ["inference.json"], {**NET, "datalist": [str(broken)], "output_dir": str(out)},
                      check=False)
    assert proc.returncode != 0 and "broken.nii.gz" in proc.stderr
    assert not list(out.rglob("*.nii.gz"))


@pytest.mark.parametrize("name", ["brats"])  # the parameter tells conftest which demo this test waits for
def test_brats_wrong_channel_count(demo, name, tmp_path):
    work, bundle, _ = demo(name)
    from e2enet_monai.data import brats_image_lists

    three = brats_image_lists(work / "data")[0][:3]
    proc = run_bundle(bundle, ["inference.json"], {**NET, "datalist": [three], "output_dir": str(tmp_path)},
                      check=False)
    assert proc.returncode != 0 and "expects 4 input channel(s), got 3" in proc.stderr


def test_unknown_override_key_is_rejected_with_suggestion(demo, tmp_path):
    work, bundle, _ = demo("btcv")
    proc = run_bundle(bundle, ["train.json"], {**CPU_DEMO_OVERRIDES, "dataset_dir": str(work / "data"), "epoch": 2},
                      check=False)
    last = proc.stderr.strip().splitlines()[-1]  # our message, not MONAI's "Failed to evaluate ConfigExpression"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert last.startswith("error: unknown override(s)") and "--epoch (did you mean --epochs" in last, last


def test_torchrun_two_ranks_on_cpu_writes_one_checkpoint(demo, tmp_path):
    work, bundle, _ = demo("btcv")
    ddp = tmp_path / bundle.name
    shutil.copytree(bundle, ddp, ignore=shutil.ignore_patterns("models", "eval"))
    overrides = {**CPU_DEMO_OVERRIDES, "dataset_dir": str(work / "data"), "epochs": 1, "epoch_length": 2,
                 "val_interval": 1}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from e2enet_monai.apps.runner import bundle_command

    cmd = bundle_command(ddp, ["train.json", "multi_gpu_train.json"], overrides, launcher)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Epoch: 1/1, Iter: 2/2" in log  # rank 0's StatsHandler; DDP keeps both ranks in lockstep
    assert log.count("Epoch: 1/1, Iter: 2/2") == 1  # only rank 0 logs
    assert sorted(p.name for p in (ddp / "models").iterdir()) == ["model.pt"]


def test_demo_topk_model_keeps_both_frozen_networks_and_infers_on_the_input_grid(demo, tmp_path):
    """The demo's top-k stages: train_global.json (whole shrunk volumes) -> train_topk.json (local network frozen
    from models/model.pt, global network from models/model_global.pt) -> evaluate -> inference_topk.json."""
    work, bundle, table = demo("btcv")
    glob = torch.load(bundle / "models/model_global.pt", map_location="cpu", weights_only=True)["model"]
    assert not any(key.startswith(("local_net.", "score_head.")) for key in glob)  # the global E2ENet alone
    ckpt = torch.load(bundle / "models/model_topk.pt", map_location="cpu", weights_only=True)
    sw = torch.load(bundle / "models/model.pt", map_location="cpu", weights_only=True)["model"]
    for prefix, frozen in (("local_net.", sw), ("global_net.", glob)):  # both exactly the weights they started from
        for key, value in frozen.items():
            assert torch.equal(ckpt["model"][prefix + key], value), prefix + key

    topk = tmp_path / bundle.name
    shutil.copytree(bundle, topk, ignore=shutil.ignore_patterns("eval"))
    run_bundle(topk, ["train.json", "train_topk.json", "evaluate.json"], {"dataset_dir": str(work / "data")})
    meta = json.loads((topk / "configs/metadata.json").read_text())
    topk_table = read_dice_table(topk / "eval", meta["network_data_format"]["outputs"]["pred"]["channel_def"])
    assert mean(topk_table.values()) >= mean(table.values()) - 0.1, (topk_table, table)

    inputs = sorted(str(p) for p in (work / "data/RawData/Testing/img").glob("*.nii.gz"))
    for src in inputs:
        case = Path(src).name[: -len(".nii.gz")]
        seg, img = nib.load(str(work / "segmentations_topk" / case / f"{case}_seg.nii.gz")), nib.load(src)
        assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) - {0}


def _run_docs_command(bundle, line):
    proc = subprocess.run(line, shell=True, cwd=bundle, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (line, proc.stderr[-3000:])
    return proc


def _check_docs_inference(bundle, work, tmp_path, tag):
    """Both documented inference commands, as written, in ``bundle``: the sliding-window one gives the demo's own
    segmentation (same weights, same configs), the top-k one writes label maps on the input grids."""
    inputs = sorted(str(p) for p in (work / "data/RawData/Testing/img").glob("*.nii.gz"))
    datalist = "['" + "','".join(inputs) + "']"
    out = tmp_path / f"out_{tag}"
    proc = _run_docs_command(bundle, docs_command(bundle, "configs/inference.json", **{
        "\"['/path/a.nii.gz','/path/b.nii.gz']\"": f'"{datalist}"', "--output_dir out": f"--output_dir {out}"}))
    for src in inputs:
        case = Path(src).name[: -len(".nii.gz")]
        written = out / case / f"{case}_seg.nii.gz"
        assert f"wrote {written}" in proc.stdout + proc.stderr  # the path is logged per case
        mine = np.asarray(nib.load(str(written)).dataobj)
        demo_seg = np.asarray(nib.load(str(work / "segmentations" / case / f"{case}_seg.nii.gz")).dataobj)
        assert np.array_equal(mine, demo_seg), case
    out_topk = tmp_path / f"out_topk_{tag}"
    line = docs_command(bundle, "\"['configs/inference.json','configs/inference_topk.json']\"", ["topk_k"], **{
        "\"['/path/a.nii.gz']\"": f'"{datalist}"', "--output_dir out": f"--output_dir {out_topk}"})
    assert "--topk_k 10" in line
    _run_docs_command(bundle, line)
    for src in inputs:
        case = Path(src).name[: -len(".nii.gz")]
        seg, img = nib.load(str(out_topk / case / f"{case}_seg.nii.gz")), nib.load(src)
        assert seg.shape == img.shape and np.allclose(seg.affine, img.affine, atol=1e-4)


def test_demo_bundle_runs_the_documented_commands_as_written(demo, tmp_path):
    work, bundle, _ = demo("btcv")
    _check_docs_inference(bundle, work, tmp_path, "demo")


def test_packaged_demo_weights_download_and_infer_identically(demo, server, tmp_path):
    """CI-trained demo weights -> release zip + index on 127.0.0.1 -> download by name -> the documented commands,
    as written, give the demo's segmentation (and the top-k one runs)."""
    from e2enet_monai.release import download, package_bundle

    work, bundle, _ = demo("btcv")
    site, url = server
    package_bundle(bundle, site, base_url=url, index=site / "index.json")
    fetched = download(bundle.name, index_url=f"{url}/index.json", bundle_dir=tmp_path / "downloaded")
    assert (fetched / "models/model.pt").read_bytes() == (bundle / "models/model.pt").read_bytes()
    for p in (site / "index.json", *site.glob("*.zip")):  # readable by a web server running as another user
        assert p.stat().st_mode & 0o044 == 0o044, (p, oct(p.stat().st_mode))
    _check_docs_inference(fetched, work, tmp_path, "downloaded")


def test_packaging_refuses_weights_that_do_not_fit_the_configs(demo, tmp_path):
    from e2enet_monai.release import package_bundle
    from e2enet_monai.utils.errors import InputError

    _, bundle, _ = demo("btcv")
    stale = tmp_path / bundle.name
    shutil.copytree(bundle, stale, ignore=shutil.ignore_patterns("eval"))
    config = json.loads((stale / "configs/inference.json").read_text())
    config["channels"] = [48, 96, 192, 320]  # the shipped width, while the weights are the CPU demo network's
    (stale / "configs/inference.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"model.pt do not fit the network the configs build \(E2ENet\): .*"
                                         r"\(8, 1, 1, 3, 3\) in the weights, \(48, 1, 1, 3, 3\) in the configs"):
        package_bundle(stale, tmp_path / "dist")
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


@pytest.mark.parametrize("name", NAMES)
def test_inference_topk_runs_for_every_bundle_on_the_input_grid(name, tmp_path):
    """inference.json + inference_topk.json through monai.bundle, fresh top-k weights, outputs on each input's grid."""
    from e2enet_monai.data import brats_image_lists, write_synthetic

    info = SHIPPED_BUNDLES[name]
    bundle_name, kind, test_glob = info.folder, info.dataset, info.test_glob
    bundle = tmp_path / bundle_name
    shutil.copytree(bundles_dir() / bundle_name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    net = {**NET, **{k: TOPK_CPU_OVERRIDES[k] for k in ("global_channels", "global_strides")}}
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs/inference.json"), str(bundle / "configs/inference_topk.json")])
    parser.update(net)
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model_topk.pt")
    sizes = {"num_cases": 2} if kind.startswith("brats") else {"num_train": 0, "num_test": 2}
    if kind == "amos":
        sizes = {"num_train": 0, "num_val": 0, "num_test": 2, "num_mri": 0}
    raw = tmp_path / "raw"
    # at least one 32 x 48 x 48 patch after resampling (smaller inputs are refused)
    write_synthetic(kind, raw, shape=(96, 96, 32) if name != "brats" else (48, 48, 40), **sizes)
    inputs = brats_image_lists(raw) if test_glob is None else sorted(str(p) for p in raw.glob(test_glob))
    out = tmp_path / "out"
    run_bundle(bundle, ["inference.json", "inference_topk.json"], {**net, "datalist": inputs, "output_dir": str(out)})
    segs = sorted(out.rglob("*_seg.nii.gz"))
    assert len(segs) == 2
    for src, seg in zip(inputs, segs):
        first = src[0] if isinstance(src, list) else src
        img, out_img = nib.load(first), nib.load(str(seg))
        assert out_img.shape == img.shape[:3] and np.allclose(out_img.affine, img.affine, atol=1e-4)
        assert out_img.get_data_dtype() == np.uint8
    if name == "btcv":  # --topk_k 0, as the docs write it: the global network alone, same output grid
        fast = tmp_path / "out_k0"
        run_bundle(bundle, ["inference.json", "inference_topk.json"],
                   {**net, "datalist": inputs, "output_dir": str(fast), "topk_k": 0})
        for seg in segs:
            k0 = nib.load(str(fast / seg.relative_to(out)))
            assert k0.shape == nib.load(str(seg)).shape and np.allclose(k0.affine, nib.load(str(seg)).affine)
