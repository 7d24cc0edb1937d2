"""Parameters, FLOPs, CPU latency and peak memory of E2ENet and its baselines, as a Markdown table and JSON."""

from __future__ import annotations

import fire
import torch

from e2enet_monai.benchmarks.model_stats import collect_model_stats, machine_label, write_stats_report
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.networks.nets.baselines import NETWORKS
from e2enet_monai.utils.cli import as_list


def main(
    networks: str | tuple = ",".join(NETWORKS),
    in_channels: int = 1,
    out_channels: int = 16,
    patch: int | tuple = (128, 96),
    density: float | None = None,
    distribution: str = "uniform",
    checkpoint: str | None = None,
    seed: int = 0,
    runs: int = 3,
    threads: int = 2,
    timing: bool = True,
    channel_multiple: int = 1,
    out_dir: str = "stats_output",
) -> None:
    """
    Report parameters (total and non-zero), FLOPs (true count and the E2ENet paper's convention), median CPU
    forward latency and peak forward memory for each network at each cubic patch size. Writes
    OUT_DIR/model_stats.md and OUT_DIR/model_stats.json and prints the table.

    Args:
        networks: comma-separated names among e2enet, dynunet (nnU-Net-like), segresnet, swinunetr.
        in_channels: input channels of every network.
        out_channels: output channels (classes) of every network.
        patch: cubic patch edge(s), e.g. 128 or 128,96.
        density: add an E2ENet row whose DSFF mesh has random kernel masks of this density in (0, 1].
        distribution: how density is spread over mesh tensors: uniform or erk.
        checkpoint: add an E2ENet row whose masks are read off this sparse-trained checkpoint, e.g. a
            bundle's models/model.pt; --in_channels and --out_channels must match it.
        seed: seed of the random masks of --density.
        runs: timed forward passes per row (the median is reported), after one warm-up pass.
        threads: torch intra-op threads for the timed passes.
        timing: measure latency and memory (False: parameters and FLOPs only, in seconds).
        channel_multiple: with --density, mask whole input channels instead of kernels, each mesh tensor keeping a
            multiple of this many (as sparse_channel_multiple trains them; FLOPs within 1 % of the compacted mesh's).
        out_dir: folder for model_stats.md and model_stats.json.
    """
    torch.set_num_threads(threads)
    sizes = [int(p) for p in as_list(patch)]
    rows = collect_model_stats(
        as_list(networks), in_channels, out_channels, sizes, density=density, distribution=distribution,
        checkpoint=checkpoint, seed=seed, runs=runs, threads=threads, timing=timing, channel_multiple=channel_multiple,
    )
    header = (f"Model statistics, {in_channels} -> {out_channels} channels, batch 1, eval mode. "
              f"Machine: {machine_label(threads)}. Latency: median of {runs} CPU forward passes.")
    print_report(write_stats_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
