"""E2ENet's CPU inference time side by side with its baselines, in torch and in ONNX runtimes: interleaved runs,
fixed threads, one fresh process per runtime."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from e2enet_monai.benchmarks.process import run_in_fresh_process
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.inferers.runtime import BACKENDS, exported_network
from e2enet_monai.networks.nets.baselines import build_network
from e2enet_monai.networks.utils import set_nnpack
from e2enet_monai.sparse import KernelMasks, compact_model
from e2enet_monai.utils.memory import reuse_freed_memory

__all__ = ["SPEED_NETWORKS", "benchmark_speed", "write_speed_report"]

# row label -> (network name of build_network, density of E2ENet's mesh or None, sparse structure, channel multiple,
# NNPACK mode of E2ENet's depth-folded convolutions). Random masks at the paper's density: "kernel" masks run densely
# (zeros are multiplied); "channel" masks are compacted first (e2enet_monai.sparse.compact_model), so the mesh runs as
# smaller dense convolutions, with the kept input channels of each convolution as they fall (19 of 96 at level 0) or
# rounded to multiples of 16. The "without NNPACK" rows are the same networks with oneDNN alone (torch only: the
# exported networks have no NNPACK path).
SPEED_NETWORKS: dict[str, tuple[str, float | None, str, int, str]] = {
    "e2enet (dense)": ("e2enet", None, "kernel", 1, "auto"),
    "e2enet (dense without NNPACK)": ("e2enet", None, "kernel", 1, "off"),
    "e2enet (kernel-sparse 0.2)": ("e2enet", 0.2, "kernel", 1, "auto"),
    "e2enet (channel-sparse 0.2 compacted)": ("e2enet", 0.2, "channel", 1, "auto"),
    "e2enet (16-aligned channel-sparse 0.2 compacted)": ("e2enet", 0.2, "channel", 16, "auto"),
    "e2enet (16-aligned channel-sparse 0.2 compacted without NNPACK)": ("e2enet", 0.2, "channel", 16, "off"),
    "dynunet (nnU-Net-like)": ("dynunet", None, "kernel", 1, "auto"),
    "segresnet": ("segresnet", None, "kernel", 1, "auto"),
}
BASELINE = "dynunet (nnU-Net-like)"


def _build(label: str, in_channels: int, out_channels: int, seed: int) -> nn.Module:
    name, density, structure, multiple, nnpack = SPEED_NETWORKS[label]
    torch.manual_seed(seed)
    net = set_nnpack(build_network(name, in_channels, out_channels).eval(), nnpack)
    if density is not None:
        masks = KernelMasks.random(net, density, "uniform", net.mesh_parameter_names(), seed=seed, structure=structure,
                                    channel_multiple=multiple)
        masks.apply(net)
        if structure == "channel":
            compact_model(net, masks)
    return net


def _runtime_worker(spec: dict, queue) -> None:
    """One runtime's measurements at one thread count in a fresh process (see :func:`benchmark_speed`); puts
    ``{"rows": [...]}``."""
    try:
        if spec["reuse_memory"]:
            reuse_freed_memory()
        runtime = spec["runtime"]
        models = {label: _build(label, spec["in_channels"], spec["out_channels"], spec["seed"])
                  for label in spec["networks"]}
        n_threads = spec["threads"]
        torch.set_num_threads(n_threads)
        rows = []
        for shape in spec["shapes"]:
            x = torch.randn(1, spec["in_channels"], *shape, generator=torch.Generator().manual_seed(spec["seed"]))
            # a runtime fixes its threads when its session is made
            runs = {label: exported_network(model, runtime, n_threads) for label, model in models.items()}
            times: dict[str, list[float]] = {label: [] for label in runs}
            with torch.inference_mode():
                for run in runs.values():
                    run(x)  # warm-up (and export)
                for _ in range(spec["repeats"]):
                    for label, run in runs.items():
                        start = time.perf_counter()
                        run(x)
                        times[label].append(time.perf_counter() - start)
            del runs  # the sessions' memory, before the next shape
            for label, timed in times.items():
                rows.append({"network": label, "runtime": runtime, "shape": list(shape), "threads": n_threads,
                             "seconds": statistics.median(timed), "runs": timed})
        queue.put({"rows": rows})
    except Exception as err:  # reported to the parent with the runtime's name
        queue.put({"error": f"{type(err).__name__}: {err}"})


def benchmark_speed(shapes: Sequence[Sequence[int]], threads: Sequence[int] = (1, 2), repeats: int = 3,
                    networks: Sequence[str] = tuple(SPEED_NETWORKS), runtimes: Sequence[str] = ("torch",),
                    in_channels: int = 1, out_channels: int = 16, seed: int = 0,
                    reuse_memory: bool = True) -> list[dict]:
    """
    Median CPU forward time (batch 1, float32) of every network in ``networks`` (labels of :data:`SPEED_NETWORKS`)
    in every runtime of ``runtimes`` (``torch`` eager under ``torch.inference_mode``, or the network exported to
    ONNX and run by ``onnxruntime`` / ``openvino``, see :func:`~e2enet_monai.inferers.exported_network`) at every
    spatial shape and intra-op thread count. Each runtime and thread count runs in a fresh process (the runtimes'
    memory pools do not add up, and no thread count runs on a heap another one left); in it, for each
    shape, every network runs once to warm up (and export), then ``repeats``
    rounds each run every network once in turn, so a slower or faster spell of the machine falls on all of them
    alike. With ``reuse_memory`` the torch process first keeps freed memory for reuse
    (:func:`~e2enet_monai.utils.memory.reuse_freed_memory`), as the bundles do with ``inference_backend`` torch;
    the runtimes' processes keep glibc's default, as the bundles do with them (ONNX Runtime's memory grows with it).
    Returns one row per (shape, threads, runtime, network): ``seconds`` (median), ``runs`` (all timed seconds) and
    ``vs_baseline`` (median over the nnU-Net-like DynUNet's median in the same shape, threads and runtime, when it
    is among ``networks``).
    """
    unknown = [n for n in networks if n not in SPEED_NETWORKS] + [r for r in runtimes if r not in BACKENDS]
    if unknown or repeats < 1:
        raise ValueError(f"networks must be among {list(SPEED_NETWORKS)}, runtimes among {list(BACKENDS)} (got "
                         f"{unknown}) and repeats >= 1 (got {repeats}).")
    rows = []
    for runtime in runtimes:
        # NNPACK exists in torch only: the exported networks are the same with it on or off
        labels = [n for n in networks if runtime == "torch" or SPEED_NETWORKS[n][4] != "off"]
        for n_threads in threads:  # a process each
            spec = {"runtime": runtime, "networks": labels, "shapes": [list(s) for s in shapes],
                    "threads": int(n_threads), "repeats": repeats, "in_channels": in_channels,
                    "out_channels": out_channels, "seed": seed, "reuse_memory": reuse_memory and runtime == "torch"}
            rows += run_in_fresh_process(_runtime_worker, spec,
                                         f"speed benchmark in {runtime} with {n_threads} thread(s)")["rows"]
    for row in rows:
        base = next((b["seconds"] for b in rows if b["network"] == BASELINE and b["runtime"] == row["runtime"]
                     and b["shape"] == row["shape"] and b["threads"] == row["threads"]), None)
        row["vs_baseline"] = row["seconds"] / base if base else None
    return sorted(rows, key=lambda r: (r["shape"], r["threads"], runtimes.index(r["runtime"])))


def write_speed_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, ...]:
    """``benchmark_speed.md`` (table), ``.json`` and, with matplotlib, ``.png`` (seconds per network)."""
    cols = ["shape", "threads", "runtime", "network", "seconds (median)", "vs DynUNet, same runtime"]
    cells = [["x".join(str(s) for s in r["shape"]), str(r["threads"]), r["runtime"], r["network"],
              f"{r['seconds']:.2f}", "" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x"] for r in rows]
    md, js = write_report(out_dir, "benchmark_speed", header, cols, cells, rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return md, js
    def group(r: dict) -> tuple[str, int, str]:
        return "x".join(str(s) for s in r["shape"]), r["threads"], r["runtime"]

    groups = list(dict.fromkeys(group(r) for r in rows))
    labels = list(dict.fromkeys(r["network"] for r in rows))
    fig, ax = plt.subplots(figsize=(5 + 1.6 * len(groups), 4.5))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        values = [next((r["seconds"] for r in rows if r["network"] == label and group(r) == g), 0.0) for g in groups]
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=label)
    ticks = [f"{shape}\n{t} thread(s)\n{runtime}" for shape, t, runtime in groups]
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], ticks)
    ax.set(ylabel="seconds per forward pass (median)", title="CPU inference, batch 1, float32")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")  # beside the bars, not over them
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = Path(out_dir) / "benchmark_speed.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return md, js, png
