"""The full-CT e2enet-segment benchmark's mechanics, on a small CT and the CPU demo network (random weights)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_copies import NET
from monai.bundle import ConfigParser

from e2enet_monai.benchmarks.segment_time import MODES, benchmark_segment, full_ct, random_weights_bundle
from e2enet_monai.utils.patches import CandidateGrid

TOPK = {**NET, "global_channels": [4, 8, 16, 32], "global_strides": [1, 2, 2, 2]}


def test_full_ct_and_random_weights_bundle(tmp_path):
    image = full_ct(tmp_path / "ct", (40, 36, 12), (0.8, 0.8, 2.5))
    nii = nib.load(str(image))
    assert nii.shape == (40, 36, 12) and np.allclose(np.abs(np.diag(nii.affine))[:3], (0.8, 0.8, 2.5))
    bundle = random_weights_bundle("btcv", tmp_path / "b", config_values=TOPK)
    for configs, weights in ((["inference.json"], "model.pt"), (["inference.json", "inference_topk.json"],
                                                               "model_topk.pt")):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in configs])
        state = torch.load(bundle / "models" / weights, weights_only=True)["model"]
        parser.get_parsed_content("network_def").load_state_dict(state)  # fits the configs' network exactly
    assert json.loads((bundle / "configs/inference.json").read_text())["channels"] == NET["channels"]


def test_benchmark_runs_the_real_command_in_each_mode(tmp_path):
    rows = benchmark_segment(tmp_path, shape=(96, 96, 32), threads=1, repeats=2, config_values=TOPK)
    assert [r["mode"] for r in rows] == list(MODES)
    resampled = [round(96 * 0.8 / 1.5), round(96 * 0.8 / 1.5), round(32 * 2.5 / 2.0)]
    grid = CandidateGrid.build([max(n, p) for n, p in zip([resampled[2], resampled[0], resampled[1]],
                                                          NET["patch_size"])], NET["patch_size"], 0.5)
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode["sliding window"]["network_runs"] == f"{len(grid)} windows"
    assert by_mode["fast (top-k)"]["network_runs"] == "global net + 5 patches"
    for r in rows:
        assert r["resampled_shape"] == resampled and len(r["wall_s_runs"]) == 2
        assert r["wall_s"] == pytest.approx(sum(r["wall_s_runs"]) / 2)  # the median of two
        assert 0 < r["inference_s"] < r["wall_s"] and r["read_s"] >= 0 and r["write_s"] >= 0
    for r in range(2):  # every run wrote its case
        for mode in ("fast", "sliding"):
            assert (tmp_path / f"out_{r}_{mode}/img0061/img0061_seg.nii.gz").is_file()
