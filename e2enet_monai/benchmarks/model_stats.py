"""Parameter, FLOP, latency and memory statistics of segmentation networks, dense or with kernel masks."""

from __future__ import annotations

import copy
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from e2enet_monai.benchmarks.process import run_in_fresh_process
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.networks.nets.baselines import build_network
from e2enet_monai.sparse import KernelMasks

__all__ = [
    "collect_model_stats",
    "cpu_latency_and_memory",
    "flop_counts",
    "load_checkpoint_masks",
    "machine_label",
    "parameter_counts",
    "write_stats_report",
]


def parameter_counts(model: nn.Module, masks: KernelMasks | None = None) -> dict[str, int]:
    """``{"total": all parameters, "nonzero": parameters left after the kernel masks (== total without masks)}``."""
    total = sum(p.numel() for p in model.parameters())
    if masks is None:
        return {"total": total, "nonzero": total}
    active, masked_total = masks.weight_counts(model)
    return {"total": total, "nonzero": total - masked_total + active}


def flop_counts(
    model: nn.Module, in_channels: int, spatial_shape: Sequence[int], masks: KernelMasks | None = None
) -> dict[str, float]:
    """
    FLOPs of one forward pass on a ``(1, in_channels, *spatial_shape)`` input, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (nothing is computed), in eval mode.

    Masked layers count only their active kernels (FLOPs x kernel density). Two counts are returned:

    - ``"true"``: the count as FlopCounterMode reports it (2 x MACs of convolutions and matmuls);
    - ``"paper"``: the E2ENet paper's convention, which counts a transposed convolution as if it ran at its
      output resolution, i.e. ``prod(stride)`` times too high (8x for 2x2x2 upsampling).
    """
    model = _meta_copy(model).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, in_channels, *spatial_shape, device="meta"))
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    total = float(counter.get_total_flops())
    density = masks.kernel_density() if masks is not None else {}
    true, paper = total, total
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            continue
        flops = float(sum(per_module.get(f"{root}.{name}", {}).values()))
        kept = density.get(f"{name}.weight", 1.0)
        true -= flops * (1.0 - kept)
        paper -= flops * (1.0 - kept)
        if isinstance(module, nn.ConvTranspose3d):
            upsampling = 1
            for s in module.stride:
                upsampling *= int(s)
            paper += flops * kept * (upsampling - 1)
    return {"true": true, "paper": paper}


def _meta_copy(model: nn.Module) -> nn.Module:
    """The model on the meta device (a copy when the model has real weights, so the caller's stays intact)."""
    if all(p.is_meta for p in model.parameters()):
        return model
    return copy.deepcopy(model).to("meta")


def _read_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _latency_worker(spec: dict, queue: mp.Queue) -> None:  # runs in a fresh process
    try:
        torch.set_num_threads(spec["threads"])
        model = build_network(spec["network"], spec["in_channels"], spec["out_channels"]).eval()
        x = torch.randn(1, spec["in_channels"], *spec["spatial_shape"])
        times = []
        with torch.inference_mode():
            model(x)  # warm-up, also reaches the steady-state memory peak
            rss_before = _read_rss_kib()
            for _ in range(spec["runs"]):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        queue.put({"latency_s": statistics.median(times), "peak_mib": max(0, peak - rss_before) / 1024})
    except Exception as e:  # reported to the parent, which raises
        queue.put({"error": f"{type(e).__name__}: {e}"})


def cpu_latency_and_memory(
    network: str, in_channels: int, out_channels: int, spatial_shape: Sequence[int], runs: int = 3, threads: int = 2
) -> dict[str, float]:
    """
    Median CPU forward latency over ``runs`` runs (after one warm-up) with ``threads`` intra-op threads, and the
    peak resident memory the forward pass adds (peak RSS minus RSS before the timed runs), measured in a fresh
    process so that models do not share allocator state. Weights are dense: PyTorch has no sparse 3D conv, so a
    masked model runs at the dense latency.
    """
    spec = {"network": network, "in_channels": in_channels, "out_channels": out_channels,
            "spatial_shape": list(spatial_shape), "runs": runs, "threads": threads}
    return run_in_fresh_process(_latency_worker, spec, f"latency measurement of {network} at {tuple(spatial_shape)}")


def load_checkpoint_masks(model: nn.Module, checkpoint: str | os.PathLike) -> KernelMasks:
    """
    Load a checkpoint (``{"model": state_dict}`` or a bare state_dict) into ``model`` and return its kernel masks:
    the saved ones when the checkpoint has them (bundles save ``"sparse"``; a kernel regrown at zero just before
    the save is active but still all-zero), otherwise read off the weights of the model's sparse parameters (a
    kernel is active when any of its weights is non-zero).
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt.get("model", ckpt))
    saved = ckpt.get("sparse", {}).get("masks") if isinstance(ckpt.get("sparse"), dict) else None
    if saved:
        return KernelMasks(saved)
    names = model.mesh_parameter_names() if hasattr(model, "mesh_parameter_names") else []
    return KernelMasks.from_weights(model, names)


def machine_label(threads: int) -> str:
    """
    A one-line description of this machine for report headers: the CPU model with its family and model numbers
    where ``/proc/cpuinfo`` gives them, the vector instructions PyTorch's kernels use on it (e.g. ``AVX2`` or
    ``AVX512``), the threads and PyTorch's version. Virtual machines sold under one name ("AMD EPYC") run CPUs of
    different generations, which time differently: the family and model tell them apart (AMD's 23/1 is Zen 1, 25/1
    Zen 3).
    """
    cpu, kind = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            first = {}
            for line in f:
                if not line.strip():
                    break  # the first processor's block
                key, _, value = line.partition(":")
                first.setdefault(key.strip(), value.strip())
        cpu = first.get("model name", cpu)
        if "cpu family" in first and "model" in first:
            kind = f"family {first['cpu family']} model {first['model']}, "
    except OSError:
        pass
    return (f"{cpu} ({kind}{torch.backends.cpu.get_cpu_capability()}), {threads} thread(s) of {os.cpu_count()} "
            f"CPU(s), torch {torch.__version__}")


def collect_model_stats(
    networks: Sequence[str],
    in_channels: int,
    out_channels: int,
    patch_sizes: Sequence[int | Sequence[int]],
    density: float | None = None,
    distribution: str = "uniform",
    checkpoint: str | None = None,
    seed: int = 0,
    runs: int = 3,
    threads: int = 2,
    timing: bool = True,
    channel_multiple: int = 1,
) -> list[dict]:
    """
    One row per (network, patch size) with parameters, FLOPs and, when ``timing``, CPU latency and memory.
    ``density`` (E2ENet only) applies random kernel masks of that density to the mesh (with ``channel_multiple``
    above 1: whole-input-channel masks, each tensor keeping a multiple of that many channels); ``checkpoint`` (E2ENet
    only) reads the masks of a sparse-trained checkpoint instead. Both add an extra E2ENet row beside the dense one,
    with the dense network's latency and memory (measured once: PyTorch runs masked kernels at the dense cost).
    """
    rows = []
    for patch in patch_sizes:
        shape = [int(patch)] * 3 if isinstance(patch, int) else [int(p) for p in patch]
        for name in networks:
            variants: list[tuple[str, KernelMasks | None]] = [(name, None)]
            if name == "e2enet" and (density is not None or checkpoint is not None):
                model = build_network(name, in_channels, out_channels)
                if checkpoint is not None:
                    masks = load_checkpoint_masks(model, checkpoint)
                    label = f"e2enet ({Path(checkpoint).name})"
                else:
                    structure = "channel" if channel_multiple > 1 else "kernel"
                    masks = KernelMasks.random(model, density, distribution, seed=seed, structure=structure,
                                               channel_multiple=channel_multiple)
                    aligned = f", channels in multiples of {channel_multiple}" if channel_multiple > 1 else ""
                    label = f"e2enet (density {density:g}, {distribution}{aligned})"
                variants = [("e2enet (dense mesh)", None), (label, masks)]
            # masks zero weights but leave the convolutions' work unchanged: one measurement serves every variant
            timed = cpu_latency_and_memory(name, in_channels, out_channels, shape, runs, threads) if timing else {}
            for label, masks in variants:
                model = build_network(name, in_channels, out_channels)
                params = parameter_counts(model, masks)
                flops = flop_counts(model, in_channels, shape, masks)
                rows.append({
                    "network": label,
                    "patch": "x".join(map(str, shape)),
                    "params_total": params["total"],
                    "params_nonzero": params["nonzero"],
                    "gflops_true": flops["true"] / 1e9,
                    "gflops_paper": flops["paper"] / 1e9,
                    **timed,
                })
    return rows


def write_stats_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, Path]:
    """Write ``model_stats.md`` (a Markdown table under ``header``) and ``model_stats.json``; return both paths."""
    timed = any("latency_s" in r for r in rows)
    cols = ["network", "patch", "params (M)", "non-zero params (M)", "GFLOPs (true)", "GFLOPs (paper conv.)"]
    cols += ["CPU latency (s, median)", "peak memory (MiB)"] if timed else []
    cells = []
    for r in rows:
        row = [r["network"], r["patch"], f"{r['params_total'] / 1e6:.2f}", f"{r['params_nonzero'] / 1e6:.2f}",
               f"{r['gflops_true']:.1f}", f"{r['gflops_paper']:.1f}"]
        if timed:
            row += [f"{r['latency_s']:.2f}", f"{r['peak_mib']:.0f}"]
        cells.append(row)
    return write_report(out_dir, "model_stats", header, cols, cells, rows)
