"""Side-by-side benchmarks run through the bundles' real workflows."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES, DEMO_SIZES
from e2enet_monai.apps.runner import read_dice_table, run_bundle
from e2enet_monai.benchmarks.model_stats import flop_counts, load_checkpoint_masks, parameter_counts
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundles_dir
from e2enet_monai.data import prepare_dataset, write_synthetic
from e2enet_monai.networks import E2ENet

__all__ = ["RUNS", "benchmark_sparse_training", "write_sparse_report"]

# name -> (row label, sparse_training, sparse_structure, sparse_distribution, sparse_channel_multiple,
# sparse_death_rate) of each training run, in table order
RUNS = {
    "dense": ("dense", False, "kernel", "uniform", 1, 0.5),
    "kernel": ("sparse 0.2 (kernel)", True, "kernel", "uniform", 1, 0.5),
    "channel": ("sparse 0.2 (channel)", True, "channel", "uniform", 1, 0.5),
    "channel_erk": ("sparse 0.2 (channel, erk)", True, "channel", "erk", 1, 0.5),
    "channel_x4": ("sparse 0.2 (channel, multiples of 4)", True, "channel", "uniform", 4, 0.5),
    "channel_x8": ("sparse 0.2 (channel, multiples of 8)", True, "channel", "uniform", 8, 0.5),
    "channel_x8_slow": ("sparse 0.2 (channel, multiples of 8, death rate 0.2)", True, "channel", "uniform", 8, 0.2),
}


def benchmark_sparse_training(workdir: str | os.PathLike, dataset: str = "btcv", seed: int = 0,
                              overrides: dict | None = None, sparse_seeds: Sequence[int] = (0,),
                              runs: Sequence[str] | None = None) -> list[dict]:
    """
    Train the same bundle on the same synthetic data for the same number of iterations: dense
    (``sparse_training=False``), sparse at density 0.2 with the paper's kernel masks, and with whole input channels
    (``sparse_structure="channel"``, the compactable kind) allocated uniformly (every mesh tensor at 0.2, the
    paper's allocation), by Erdos-Renyi-Kernel (``sparse_distribution="erk"``: thin tensors keep more channels,
    the same overall density) and uniformly in multiples of 4 and of 8 channels (``sparse_channel_multiple``; 8 is
    the vector width of AVX2 CPUs; on the demo's 8-64-channel mesh 4 is half its narrowest level, about as coarse
    as the 16 the paper's 48-320-channel mesh runs fastest with (a third of 48), and leaves the mesh at about 0.22;
    at least 8 channels per tensor leave it at about 0.26), and in multiples of 8 with a death rate of 0.2 instead of
    the paper's 0.5 (``sparse_death_rate``: a swapped channel is a whole trained input of the tensor);
    each sparse kind once per mask seed in ``sparse_seeds`` (``sparse_seed``: initial
    masks and regrowth), since one short run's Dice depends on whether its few small organs are learned at all.
    ``runs``: the names of :data:`RUNS` to train (default all), in table order; ``overrides`` change the CPU demo
    settings (e.g. ``{"channels": [16, 32, 64, 128]}``, a mesh twice as wide). Each run is evaluated on the
    held-out fold. Returns one row per kind: mean Dice over its runs and each run's,
    per-class Dice averaged over the runs, non-zero parameters and FLOPs (measured from the saved checkpoint's
    masks, at the training patch size, averaged) and seconds per training iteration (median over the runs).
    """
    if not sparse_seeds:
        raise ValueError("sparse_seeds must name at least one mask seed, e.g. (0,) or (0, 1).")
    names = list(RUNS) if runs is None else [str(r) for r in runs]
    unknown = [r for r in names if r not in RUNS]
    if unknown or not names:
        raise ValueError(f"runs must name some of {list(RUNS)}; got {names}.")
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
    for label, sparse, structure, distribution, multiple, death in (RUNS[name] for name in RUNS if name in names):
        settings = {"sparse_training": sparse, "sparse_structure": structure, "sparse_distribution": distribution,
                    "sparse_channel_multiple": multiple, "sparse_death_rate": death}
        trained = [_train_and_evaluate(work / f"{_folder(label)}_seed{s}", bundle_name, iterations,
                                       {**base, **settings, "sparse_seed": s})
                   for s in (sparse_seeds if sparse else sparse_seeds[:1])]
        classes = list(trained[0]["per_class_dice"])
        rows.append({
            "run": label,
            "mean_dice": statistics.fmean(r["mean_dice"] for r in trained),
            "dice_per_seed": [r["mean_dice"] for r in trained],
            "sparse_seeds": [int(s) for s in sparse_seeds] if sparse else [],
            "mesh_density": statistics.fmean(r["mesh_density"] for r in trained),
            "params_nonzero": round(statistics.fmean(r["params_nonzero"] for r in trained)),
            "params_total": trained[0]["params_total"],
            "gflops_true": statistics.fmean(r["gflops_true"] for r in trained),
            "seconds_per_iteration": statistics.median(r["seconds_per_iteration"] for r in trained),
            "iterations": iterations,
            "per_class_dice": {c: statistics.fmean(r["per_class_dice"][c] for r in trained) for c in classes},
        })
    return rows


def _folder(label: str) -> str:
    return label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")


def _train_and_evaluate(folder: Path, bundle_name: str, iterations: int, run: dict) -> dict:
    """Train a fresh copy of the bundle with ``run`` as overrides, evaluate it, measure its masks."""
    bundle = folder / bundle_name
    shutil.copytree(bundles_dir() / bundle_name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    start = time.perf_counter()
    run_bundle(bundle, ["train.json"], run, log_file=folder / "train.log")
    seconds = time.perf_counter() - start
    run_bundle(bundle, ["train.json", "evaluate.json"], run, log_file=folder / "evaluate.log")
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    fmt = meta["network_data_format"]
    table = read_dice_table(bundle / "eval", fmt["outputs"]["pred"]["channel_def"])
    net = E2ENet(3, fmt["inputs"]["image"]["num_channels"], fmt["outputs"]["pred"]["num_channels"],
                 channels=run["channels"], strides=run["strides"])
    masks = load_checkpoint_masks(net, bundle / "models/model.pt")
    active, total = masks.weight_counts(net)
    params = parameter_counts(net, masks)
    flops = flop_counts(net, fmt["inputs"]["image"]["num_channels"], run["patch_size"], masks)
    valid = [v for v in table.values() if not math.isnan(v)]
    return {
        "mean_dice": sum(valid) / len(valid),
        "mesh_density": active / total,
        "params_nonzero": params["nonzero"],
        "params_total": params["total"],
        "gflops_true": flops["true"] / 1e9,
        "seconds_per_iteration": seconds / iterations,
        "per_class_dice": table,
    }


def write_sparse_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, Path]:
    """``benchmark_sparse.md`` (table) and ``benchmark_sparse.json``."""
    cols = ["run", "mean Dice", "per mask seed", "mesh density", "non-zero params", "GFLOPs (true, per patch)",
            "s / iteration"]
    cells = [[r["run"], f"{r['mean_dice']:.3f}", ", ".join(f"{d:.3f}" for d in r["dice_per_seed"]) if r["sparse_seeds"]
              else "-", f"{r['mesh_density']:.3f}", f"{r['params_nonzero']:,}", f"{r['gflops_true']:.2f}",
              f"{r['seconds_per_iteration']:.3f}"] for r in rows]
    return write_report(out_dir, "benchmark_sparse", header, cols, cells, rows)
