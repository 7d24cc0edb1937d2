"""Seconds per training step of the CPU demo network with its narrow convolutions trained through channels-last
maps and with ``nn.Conv3d`` throughout: interleaved steps, fixed threads, medians, one fresh process."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from e2enet_monai.benchmarks.process import run_in_fresh_process
from e2enet_monai.benchmarks.report import write_report
from e2enet_monai.bundle.optim import make_optimizer
from e2enet_monai.losses import deep_supervision_dice_ce
from e2enet_monai.networks import E2ENet
from e2enet_monai.networks.blocks import NarrowConv3d
from e2enet_monai.utils.memory import reuse_freed_memory

__all__ = ["BASELINE", "TRAIN_STEP_VARIANTS", "benchmark_train_step", "write_train_step_report"]

BASELINE = "nn.Conv3d throughout"
# row label -> whether the narrow convolutions take their channels-last path
TRAIN_STEP_VARIANTS = {"narrow convolutions channels-last (default)": True, BASELINE: False}


def _worker(spec: dict, queue) -> None:
    """All measurements in a fresh process (see :func:`benchmark_train_step`); puts ``{"rows": [...]}``."""
    try:
        reuse_freed_memory()  # as the bundles' training does
        gen = torch.Generator().manual_seed(spec["seed"])
        x = torch.randn(spec["batch"], 1, *spec["patch"], generator=gen)
        y = torch.randint(0, spec["classes"], (spec["batch"], 1, *spec["patch"]), generator=gen).float()
        setups = {}
        for label, channels_last in TRAIN_STEP_VARIANTS.items():
            torch.manual_seed(spec["seed"])  # the same initial weights
            net = E2ENet(3, 1, spec["classes"], channels=spec["channels"], strides=spec["strides"]).train()
            for module in net.modules():
                if isinstance(module, NarrowConv3d):
                    module.channels_last_training = channels_last
            loss = deep_supervision_dice_ce(len(net.heads), batch_dice=True)
            setups[label] = (net, loss, make_optimizer(net.parameters(), "adamw", spec["lr"]))

        def step(label: str) -> float:
            net, loss, opt = setups[label]
            opt.zero_grad(set_to_none=True)
            value = loss(net(x), y)
            value.backward()
            opt.step()
            return float(value.detach())

        rows, first = [], None
        for n_threads in spec["threads"]:
            torch.set_num_threads(int(n_threads))
            warm_up = {label: step(label) for label in setups}
            first = first or warm_up  # the very first step's losses: same weights and data in both variants
            times: dict[str, list[float]] = {label: [] for label in setups}
            for _ in range(spec["steps"]):
                for label in setups:
                    start = time.perf_counter()
                    step(label)
                    times[label].append(time.perf_counter() - start)
            for label, timed in times.items():
                rows.append({"variant": label, "threads": int(n_threads), "seconds": statistics.median(timed),
                             "runs": timed, "first_loss": first[label]})
        queue.put({"rows": rows})
    except Exception as err:  # reported to the parent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def benchmark_train_step(threads: Sequence[int] = (1, 2), steps: int = 20, patch: Sequence[int] = (32, 48, 48),
                         batch: int = 4, channels: Sequence[int] = (8, 16, 32, 64),
                         strides: Sequence[int] = (1, 2, 2, 2), classes: int = 14, lr: float = 0.02,
                         seed: int = 0) -> list[dict]:
    """
    Median seconds of one training step (forward, the bundles' deep-supervision Dice + cross-entropy, backward,
    AdamW) of E2ENet in each of :data:`TRAIN_STEP_VARIANTS`, at each intra-op thread count. The defaults are the
    CPU demo's network and patches (``CPU_DEMO_OVERRIDES``: 4 patches of 32 x 48 x 48, BTCV's 14 classes). Both
    variants start from the same weights and data; per thread count, each takes one step (warm-up), then ``steps``
    rounds each time one step of every variant in turn. Each variant trains on from its own previous step (the
    weights drift apart only by float round-off). Returns one row per (threads, variant): ``seconds`` (median),
    ``runs``, ``first_loss`` (the first step's loss, equal between variants up to round-off) and ``vs_baseline``
    (over ``nn.Conv3d`` throughout).
    """
    if steps < 1 or len(patch) != 3 or len(channels) != len(strides):
        raise ValueError(f"need steps >= 1 (got {steps}), a 3D patch (got {list(patch)}) and one stride per level "
                         f"(got {len(channels)} channels, {len(strides)} strides).")
    spec = {"threads": [int(t) for t in threads], "steps": int(steps), "patch": [int(p) for p in patch],
            "batch": int(batch), "channels": [int(c) for c in channels], "strides": [int(s) for s in strides],
            "classes": int(classes), "lr": float(lr), "seed": int(seed)}
    rows = run_in_fresh_process(_worker, spec, "training-step benchmark")["rows"]
    for row in rows:
        base = next(b["seconds"] for b in rows if b["variant"] == BASELINE and b["threads"] == row["threads"])
        row["vs_baseline"] = row["seconds"] / base
    return rows


def write_train_step_report(rows: list[dict], out_dir: str | os.PathLike, header: str) -> tuple[Path, Path]:
    """``benchmark_train_step.md`` (table under ``header``) and ``.json`` in ``out_dir``."""
    cells = [[r["variant"], str(r["threads"]), f"{r['seconds']:.3f}", f"{r['vs_baseline']:.2f}x",
              f"{r['first_loss']:.6f}"] for r in rows]
    columns = ["training step", "threads", "seconds (median)", "vs nn.Conv3d", "first step's loss"]
    return write_report(out_dir, "benchmark_train_step", header, columns, cells, rows)
