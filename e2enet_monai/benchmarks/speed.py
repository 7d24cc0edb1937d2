"""E2ENet's CPU inference time side by side with its baselines: one process, interleaved runs, fixed threads."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.networks.nets.baselines import build_network
from e2enet_monai.sparse import KernelMasks, compact_model

__all__ = ["SPEED_NETWORKS", "benchmark_speed", "write_speed_report"]

# row label -> (network name of build_network, density of E2ENet's mesh or None, sparse structure). Random masks at
# the paper's density: "kernel" masks run densely (zeros are multiplied); "channel" masks are compacted first
# (e2enet_monai.sparse.compact_model), so the mesh runs as smaller dense convolutions
SPEED_NETWORKS: dict[str, tuple[str, float | None, str]] = {
    "e2enet (dense)": ("e2enet", None, "kernel"),
    "e2enet (kernel-sparse 0.2)": ("e2enet", 0.2, "kernel"),
    "e2enet (channel-sparse 0.2 compacted)": ("e2enet", 0.2, "channel"),
    "dynunet (nnU-Net-like)": ("dynunet", None, "kernel"),
    "segresnet": ("segresnet", None, "kernel"),
}
BASELINE = "dynunet (nnU-Net-like)"


def _build(label: str, in_channels: int, out_channels: int, seed: int) -> nn.Module:
    name, density, structure = SPEED_NETWORKS[label]
    torch.manual_seed(seed)
    net = build_network(name, in_channels, out_channels).eval()
    if density is not None:
        masks = KernelMasks.random(net, density, "uniform", net.mesh_parameter_names(), seed=seed, structure=structure)
        masks.apply(net)
        if structure == "channel":
            compact_model(net, masks)
    return net


def benchmark_speed(shapes: Sequence[Sequence[int]], threads: Sequence[int] = (1, 2), repeats: int = 3,
                    networks: Sequence[str] = tuple(SPEED_NETWORKS), in_channels: int = 1, out_channels: int = 16,
                    seed: int = 0) -> list[dict]:
    """
    Median eager CPU forward time (batch 1, ``torch.inference_mode``, float32) of every network in ``networks``
    (labels of :data:`SPEED_NETWORKS`) at every spatial shape and intra-op thread count. For each shape and thread
    count, every network runs once to warm up, then ``repeats`` rounds each run every network once in turn, so a
    slower or faster spell of the machine falls on all of them alike. Returns one row per (shape, threads,
    network): ``seconds`` (median), ``runs`` (all timed seconds) and ``vs_baseline`` (median over the nnU-Net-like
    DynUNet's median in the same shape and threads, when it is among ``networks``).
    """
    unknown = [n for n in networks if n not in SPEED_NETWORKS]
    if unknown or repeats < 1:
        raise ValueError(f"networks must be among {list(SPEED_NETWORKS)} (got {unknown}) and repeats >= 1 "
                         f"(got {repeats}).")
    models = {label: _build(label, in_channels, out_channels, seed) for label in networks}
    rows = []
    before = torch.get_num_threads()
    try:
        for shape in shapes:
            x = torch.randn(1, in_channels, *shape, generator=torch.Generator().manual_seed(seed))
            for n_threads in threads:
                torch.set_num_threads(int(n_threads))
                times: dict[str, list[float]] = {label: [] for label in models}
                with torch.inference_mode():
                    for label, model in models.items():
                        model(x)  # warm-up
                    for _ in range(repeats):
                        for label, model in models.items():
                            start = time.perf_counter()
                            model(x)
                            times[label].append(time.perf_counter() - start)
                medians = {label: statistics.median(v) for label, v in times.items()}
                for label, runs in times.items():
                    rows.append({"network": label, "shape": list(shape), "threads": int(n_threads),
                                 "seconds": medians[label], "runs": runs,
                                 "vs_baseline": medians[label] / medians[BASELINE] if BASELINE in medians else None})
    finally:
        torch.set_num_threads(before)
    return rows


def write_speed_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, ...]:
    """``benchmark_speed.md`` (table), ``.json`` and, with matplotlib, ``.png`` (seconds per network)."""
    cols = ["shape", "threads", "network", "seconds (median)", "vs DynUNet"]
    cells = [["x".join(str(s) for s in r["shape"]), str(r["threads"]), r["network"], f"{r['seconds']:.2f}",
              "" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x"] for r in rows]
    md, js = write_report(out_dir, "benchmark_speed", header, cols, cells, rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return md, js
    groups = sorted({("x".join(str(s) for s in r["shape"]), r["threads"]) for r in rows})
    labels = list(dict.fromkeys(r["network"] for r in rows))
    fig, ax = plt.subplots(figsize=(2 + 2 * len(groups), 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [next((r["seconds"] for r in rows if r["network"] == label
                        and ("x".join(str(s) for s in r["shape"]), r["threads"]) == g), 0.0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], [f"{s}, {t} thread(s)" for s, t in groups])
    ax.set(ylabel="seconds per forward pass (median)", title="CPU inference, batch 1, float32")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = Path(out_dir) / "benchmark_speed.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return md, js, png
