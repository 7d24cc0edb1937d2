"""
How long ``e2enet-segment`` takes for one full-size CT: sliding window against ``--fast`` (top-k), each run as the
real command in a fresh process with fixed threads, rounds interleaved, medians reported. The bundle is a shipped
bundle with its real network configuration and seeded random weights (time does not depend on the weights).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from e2enet_monai.apps.config_values import set_config_values
from e2enet_monai.bundle.registry import bundle_path
from e2enet_monai.data.phantoms import write_synthetic
from e2enet_monai.transforms.pipelines import SLICE_FIRST
from e2enet_monai.utils.patches import CandidateGrid

__all__ = ["MODES", "benchmark_segment", "full_ct", "random_weights_bundle"]

MODES = {"fast (top-k)": ["--fast"], "sliding window": []}


def full_ct(folder: Path, shape: Sequence[int], spacing: Sequence[float]) -> Path:
    """One BTCV-layout phantom CT of ``shape`` voxels at ``spacing`` mm (the test image of the BTCV phantoms)."""
    raw = write_synthetic("btcv", folder, num_train=0, num_test=1, shape=tuple(shape), spacing=tuple(spacing))
    return sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))[0]


def random_weights_bundle(name: str, folder: Path, seed: int = 0,
                          config_values: Mapping[str, object] | None = None, source: Path | None = None) -> Path:
    """The shipped bundle ``name`` (or the bundle folder ``source``) copied into ``folder`` with seeded random
    ``model.pt`` and ``model_topk.pt`` for the networks its configs build: the real configuration, unless
    ``config_values`` (config id -> value, written into both inference configs) changes it."""
    source = Path(source) if source is not None else bundle_path(name)
    bundle = folder / source.name
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    if config_values:
        set_config_values(bundle, dict(config_values), ["inference.json", "inference_topk.json"])
    (bundle / "models").mkdir()
    for configs, weights in ((["inference.json"], "model.pt"), (["inference.json", "inference_topk.json"],
                                                               "model_topk.pt")):
        parser = ConfigParser()
        parser.read_config([str(bundle / "configs" / c) for c in configs])
        torch.manual_seed(seed)
        torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models" / weights)
    return bundle


def _resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    return [int(round(n * s / t)) for n, s, t in zip(shape, spacing, target)]


def benchmark_segment(workdir: str | os.PathLike, bundle: str = "btcv", shape: Sequence[int] = (512, 512, 200),
                      spacing: Sequence[float] = (0.8, 0.8, 2.5), threads: int = 2, repeats: int = 1,
                      modes: Sequence[str] = tuple(MODES),
                      config_values: Mapping[str, object] | None = None) -> list[dict]:
    """
    Run ``e2enet-segment`` on one CT of ``shape`` at ``spacing`` in each of ``modes`` (:data:`MODES`), ``repeats``
    interleaved rounds, each run a fresh process with ``threads`` intra-op threads (``--threads`` and
    ``OMP_NUM_THREADS``). ``config_values`` changes the bundle's network configuration (see
    :func:`random_weights_bundle`).

    Returns:
        one row per mode: wall seconds of the whole command (median and each run), the command's own split into
        reading, inference and writing (medians, from its ``summary.csv``), and the patches the network runs on.
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    image = full_ct(work / "ct", shape, spacing)
    source = random_weights_bundle(bundle, work / "bundle", config_values=config_values)
    config = json.loads((source / "configs/inference.json").read_text())
    topk = json.loads((source / "configs/inference_topk.json").read_text())
    resampled = _resampled_shape(shape, spacing, config["spacing"])
    network_grid = [resampled[i - 1] for i in SLICE_FIRST[1:]]  # the CT chain puts the slice axis first
    windows = len(CandidateGrid.build([max(n, p) for n, p in zip(network_grid, config["patch_size"])],
                                      config["patch_size"], float(config["inferer"]["overlap"])))
    patches = {"sliding window": f"{windows} windows", "fast (top-k)": f"global net + {topk['topk_k']} patches"}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(repeats):
        for mode in modes:
            out = work / f"out_{r}_{mode.split()[0]}"
            cmd = [sys.executable, "-m", "e2enet_monai.segment", "-i", str(image), "-o", str(out), "--bundle",
                   str(source), "--threads", str(threads), "--overwrite", *MODES[mode]]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            with open(out / "summary.csv", newline="") as f:
                (row,) = list(csv.DictReader(f))
            runs[mode].append({"wall_s": wall, **{k: float(row[f"{k}_s"]) for k in ("read", "inference", "write")}})
            print(f"round {r + 1}/{repeats}, {mode}: {wall:.1f} s", flush=True)
    return [{"mode": mode, "shape": list(shape), "spacing": list(spacing), "resampled_shape": resampled,
             "threads": threads, "network_runs": patches[mode],
             "wall_s": statistics.median(x["wall_s"] for x in runs[mode]),
             "wall_s_runs": [x["wall_s"] for x in runs[mode]],
             **{f"{k}_s": statistics.median(x[k] for x in runs[mode]) for k in ("read", "inference", "write")}}
            for mode in modes]
