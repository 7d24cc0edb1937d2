"""Side-by-side benchmarks run through the bundles' real workflows."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES, DEMO_SIZES
from e2enet_monai.apps.runner import read_dice_table, run_bundle
from e2enet_monai.benchmarks.model_stats import flop_counts, load_checkpoint_masks, parameter_counts
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundles_dir
from e2enet_monai.data import prepare_dataset, write_synthetic
from e2enet_monai.networks import E2ENet

__all__ = ["RUNS", "benchmark_sparse_training", "write_sparse_report"]

# (row label, sparse_training, sparse_structure, sparse_distribution) of each training run, in table order
RUNS = (
    ("dense", False, "kernel", "uniform"),
    ("sparse 0.2 (kernel)", True, "kernel", "uniform"),
    ("sparse 0.2 (channel)", True, "channel", "uniform"),
    ("sparse 0.2 (channel, erk)", True, "channel", "erk"),
)


def benchmark_sparse_training(workdir: str | os.PathLike, dataset: str = "btcv", seed: int = 0,
                              overrides: dict | None = None) -> list[dict]:
    """
    Train the same bundle on the same synthetic data for the same number of iterations four times, dense
    (``sparse_training=False``), sparse at density 0.2 with the paper's kernel masks, and with whole input channels
    (``sparse_structure="channel"``, the compactable kind) allocated uniformly (every mesh tensor at 0.2, the
    paper's allocation) and by Erdos-Renyi-Kernel (``sparse_distribution="erk"``: thin tensors keep more channels,
    the same overall density), then evaluate each on the held-out fold. Returns one row per run: mean Dice, non-zero
    parameters and FLOPs (measured from the saved checkpoint's masks, at the training patch size) and seconds per
    training iteration.
    """
    bundle_name, kind, sizes = SHIPPED_BUNDLES[dataset].folder, SHIPPED_BUNDLES[dataset].dataset, DEMO_SIZES[dataset]
    work = Path(workdir)
    if work.exists():
        shutil.rmtree(work)
    raw = work / "data"
    write_synthetic(kind, raw, seed=seed, **sizes)
    prepare_dataset(kind, raw, raw / "datalist.json")
    base = {**CPU_DEMO_OVERRIDES, "dataset_dir": str(raw), **(overrides or {})}
    iterations = base["epochs"] * base["epoch_length"]
    rows = []
    for label, sparse, structure, distribution in RUNS:
        bundle = work / label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "") / bundle_name
        shutil.copytree(bundles_dir() / bundle_name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
        run = {**base, "sparse_training": sparse, "sparse_structure": structure, "sparse_distribution": distribution}
        start = time.perf_counter()
        run_bundle(bundle, ["train.json"], run, log_file=bundle.parent / "train.log")
        seconds = time.perf_counter() - start
        run_bundle(bundle, ["train.json", "evaluate.json"], run, log_file=bundle.parent / "evaluate.log")
        meta = json.loads((bundle / "configs/metadata.json").read_text())
        fmt = meta["network_data_format"]
        table = read_dice_table(bundle / "eval", fmt["outputs"]["pred"]["channel_def"])
        net = E2ENet(3, fmt["inputs"]["image"]["num_channels"], fmt["outputs"]["pred"]["num_channels"],
                     channels=run["channels"], strides=run["strides"])
        masks = load_checkpoint_masks(net, bundle / "models/model.pt")
        density = masks.weight_counts(net)[0] / masks.weight_counts(net)[1]
        params = parameter_counts(net, masks)
        flops = flop_counts(net, fmt["inputs"]["image"]["num_channels"], run["patch_size"], masks)
        valid = [v for v in table.values() if not math.isnan(v)]
        rows.append({
            "run": label,
            "mean_dice": sum(valid) / len(valid),
            "mesh_density": density,
            "params_nonzero": params["nonzero"],
            "params_total": params["total"],
            "gflops_true": flops["true"] / 1e9,
            "seconds_per_iteration": seconds / iterations,
            "iterations": iterations,
            "per_class_dice": table,
        })
    return rows


def write_sparse_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, Path]:
    """``benchmark_sparse.md`` (table) and ``benchmark_sparse.json``."""
    cols = ["run", "mean Dice", "mesh density", "non-zero params", "GFLOPs (true, per patch)", "s / iteration"]
    cells = [[r["run"], f"{r['mean_dice']:.3f}", f"{r['mesh_density']:.3f}", f"{r['params_nonzero']:,}",
              f"{r['gflops_true']:.2f}", f"{r['seconds_per_iteration']:.3f}"] for r in rows]
    return write_report(out_dir, "benchmark_sparse", header, cols, cells, rows)
