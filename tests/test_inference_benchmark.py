"""The inference benchmark's measuring worker and report, on a tiny phantom with freshly initialised weights."""

import json
import shlex
import shutil

import fire
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from e2enet_monai.benchmarks.inference import (
    DEFAULT_KS,
    _dice,
    _measure,
    benchmark_inference,
    command_line,
    write_inference_report,
)
from e2enet_monai.bundle.registry import bundles_dir
from e2enet_monai.data import write_synthetic

NET = {"channels": [4, 8, 16], "strides": [1, 2, 2], "patch_size": [16, 32, 32]}
TOPK = {**NET, "global_channels": [4, 8, 16], "global_strides": [1, 2, 2]}
# the benchmark's postprocessing (label maps inverted by nearest neighbour) on one method, the default on the other
FAST = {"invert_labels": True}


def test_dice_counts_classes_present_in_label_or_prediction():
    label = np.zeros((4, 4, 4), np.uint8)
    label[:2] = 1
    pred = label.copy()
    pred[0, 0, 0] = 2  # a false-positive class scores 0
    expected = np.mean([2 * 31 / (31 + 32), 0.0])
    assert abs(_dice(pred, label, 3) - expected) < 1e-9


def test_worker_times_both_methods_and_counts_flops(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles_dir() / "e2enet_btcv_segmentation", bundle, ignore=shutil.ignore_patterns("models", "eval"))
    (bundle / "models").mkdir()
    for configs, overrides, name in ((["inference.json"], NET, "model.pt"),
                                     (["inference.json", "inference_topk.json"], TOPK, "model_topk.pt")):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in configs])
        parser.update(overrides)
        torch.manual_seed(0)
        torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models" / name)
    raw = write_synthetic("btcv", tmp_path / "raw", num_train=1, num_test=0, shape=(64, 64, 24))
    image = sorted((raw / "RawData/Training/img").glob("*.nii.gz"))[0]
    label = raw / "RawData/Training/label" / image.name.replace("img", "label")
    rows = []
    for method, configs, overrides, k in (("sliding window", ["inference.json"], NET, 0),
                                          ("top-k K=2", ["inference.json", "inference_topk.json"],
                                           {**TOPK, **FAST, "topk_k": 2}, 2)):
        spec = {"method": method, "bundle": str(bundle), "configs": configs, "overrides": overrides, "k": k,
                "output_dir": str(tmp_path / "out" / str(k)), "cases": [(str(image), str(label))], "threads": 1,
                "in_channels": 1}
        res = _measure(spec)
        seg = list((tmp_path / "out" / str(k)).rglob("*_seg.nii.gz"))
        assert len(seg) == 1 and nib.load(seg[0]).shape == nib.load(image).shape  # the whole pipeline wrote it
        assert 0 <= res["rows"][0]["dice"] <= 1 and res["rows"][0]["network_s"] <= res["rows"][0]["pipeline_s"]
        rows.append({"method": method, "patches": res["patches"], "windows": res["windows"],
                     "gflops": res["flops"] / 1e9, "pipeline_s": res["rows"][0]["pipeline_s"],
                     "network_s": res["rows"][0]["network_s"], "peak_mib": res["peak_mib"],
                     "dice": res["rows"][0]["dice"]})
    assert rows[1]["patches"] == 2 and rows[0]["patches"] == rows[0]["windows"] > 2
    assert rows[1]["gflops"] < rows[0]["gflops"]  # 2 local patches + a small global pass < every window
    md, js, *_ = write_inference_report(rows, tmp_path / "report", "header")
    assert "| top-k K=2 | 2 |" in md.read_text() and json.loads(js.read_text())["rows"][1]["patches"] == 2


def test_reusing_training_made_with_other_settings_is_refused_and_keeps_the_folder(tmp_path):
    work = tmp_path / "bench"
    work.mkdir()
    record = work / "training.json"
    record.write_text(json.dumps({"shape": [64, 64, 24], "spacing": [0.8, 0.8, 2.5], "num_train": 8, "num_test": 2,
                                  "seed": 0, "train": {}, "train_global": {}, "train_topk": {}}))
    try:
        benchmark_inference(work, shape=(96, 96, 32), reuse_training=True)
    except ValueError as err:
        message = str(err)
    else:
        raise AssertionError("expected a ValueError")
    assert str(record) in message and "shape" in message and "reuse_training" in message
    assert record.is_file()  # nothing deleted
    with pytest.raises(ValueError, match=r"ks holds \[-2\]: each K must be >= 0 .* or -1 for every candidate"):
        benchmark_inference(work, ks=(0, -2), reuse_training=True)
    assert record.is_file()


def test_reuse_retrains_from_the_first_stage_whose_settings_or_configs_changed(tmp_path, monkeypatch):
    import e2enet_monai.benchmarks.inference as bench

    calls = []
    overwrites = []

    def run_bundle(bundle, configs, overrides, log_file):
        calls.append(configs[-1])
        overwrites.append(overrides.get("overwrite"))

    monkeypatch.setattr(bench, "run_bundle", run_bundle)
    shutil.copytree(bundles_dir() / "e2enet_btcv_segmentation/configs", tmp_path / "configs")
    settings = {"train": {"epochs": 1}, "train_global": {"epochs": 2}, "train_topk": {"epochs": 3}}
    first = bench._train(tmp_path, tmp_path, settings, None)
    assert calls == ["train.json", "train_global.json", "train_topk.json"]
    assert {k for k in first if k.startswith("minutes_")} == {"minutes_train", "minutes_train_global",
                                                               "minutes_train_topk"}
    calls.clear()
    again = bench._train(tmp_path, tmp_path, {**settings, "train_global": {"epochs": 5}}, {**first, "minutes_train": 7})
    assert calls == ["train_global.json", "train_topk.json"]  # the sliding-window model is kept, the rest retrained
    assert again["minutes_train"] == 7 and again["train_global"] == {"epochs": 5}
    assert set(overwrites) == {True}  # a retrained stage replaces its earlier weights (the bundle refuses otherwise)
    assert "overwrite" not in again["train_global"]  # and the recorded settings stay the caller's
    calls.clear()
    bench._train(tmp_path, tmp_path, settings, first)
    assert calls == []
    with open(tmp_path / "configs/train_topk.json", "a") as f:  # an edited config file the global stage reads too
        f.write("\n")
    bench._train(tmp_path, tmp_path, settings, first)
    assert calls == ["train_global.json", "train_topk.json"]


def test_report_command_reads_back_to_the_same_settings():
    """The command quoted in the report, pasted in a shell, gives fire the same flags (booleans stay booleans)."""
    train, topk = {"sparse_training": False, "epochs": 20, "patch_size": [32, 48, 48]}, {"epochs": 8}
    glob, infer = {"learning_rate": 0.001}, {"topk_selection": "uncertainty"}
    line = command_line(invert_labels=False, train_overrides=train, topk_overrides=topk, global_overrides=glob,
                        shape=(128, 128, 48), ks=(0, 5, -1), spacing=(1.5, 1.5, 2.0), topk_inference_overrides=infer)
    seen = {}

    def main(invert_labels=True, reuse_training=False, train_overrides=None, topk_overrides=None,
             global_overrides=None, shape=(512, 512, 200), ks=DEFAULT_KS, spacing=(0.8, 0.8, 2.5),
             topk_inference_overrides=None):
        seen.update(invert_labels=invert_labels, reuse_training=reuse_training, train=train_overrides,
                    topk=topk_overrides, glob=global_overrides, shape=shape, ks=ks, spacing=spacing,
                    infer=topk_inference_overrides)

    words = shlex.split(line)
    assert words[:2] == ["python", "tools/benchmark_inference.py"]
    fire.Fire(main, command=words[2:])
    assert seen == {"invert_labels": False, "reuse_training": False, "train": train, "topk": topk, "glob": glob,
                    "shape": (128, 128, 48), "ks": (0, 5, -1), "spacing": (1.5, 1.5, 2.0), "infer": infer}
    assert command_line() == "python tools/benchmark_inference.py"


def test_shipped_configuration_bundles_load_their_random_weights_with_each_local_network(tmp_path):
    """The shipped-configuration timing builds, for each local network, a bundle whose sliding-window and top-k
    configs build that network and whose random weights fit them, as the bundle's own check reads them."""
    from e2enet_monai.benchmarks.inference import LOCAL_NETWORKS, _shipped_bundle
    from e2enet_monai.bundle import check_weights_fit_configs

    for local in LOCAL_NETWORKS:
        bundle = _shipped_bundle(tmp_path, local)
        assert check_weights_fit_configs(bundle) == ["models/model.pt", "models/model_topk.pt"]
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs/inference.json"), str(bundle / "configs/inference_topk.json")])
        nets = (ConfigParser(json.loads((bundle / "configs/inference.json").read_text())).get_parsed_content(
            "network_def"), parser.get_parsed_content("network_def").local_net)
        assert all(type(n).__name__ == {"e2enet": "E2ENet", "dynunet": "DynUNet"}[local] for n in nets)
        assert parser["patch_size"] == [96, 128, 128] and parser["channels"][0] == 48  # as shipped
