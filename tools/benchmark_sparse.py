"""Dense vs sparse (mesh density 0.2: kernel masks, channel masks uniform, ERK and in multiples of 4 and 8, the last
also at a lower death rate) training on phantoms, in one run."""

from __future__ import annotations

import fire
import torch

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.benchmarks.sparse_training import benchmark_sparse_training, write_sparse_report
from e2enet_monai.utils.cli import as_list


def main(dataset: str = "btcv", workdir: str = "benchmark_output/sparse", out_dir: str = "benchmark_output",
         seed: int = 0, sparse_seeds: str | int | tuple = (0, 1), runs: str | tuple | None = None,
         channels: str | tuple | None = None) -> None:
    """
    Train dense, kernel-sparse and channel-sparse (uniform, ERK, multiples of 4 and 8, multiples of 8 at death rate
    0.2) with the same data, seed and iterations (the CPU demo settings), evaluate each on the held-out fold, and
    write OUT_DIR/benchmark_sparse.md and .json.

    Args:
        dataset: btcv, amos or brats (synthetic phantoms of that layout).
        workdir: scratch folder for data and the trained bundles (replaced).
        out_dir: folder for the report.
        seed: phantom seed.
        sparse_seeds: mask seeds (comma-separated); each sparse kind is trained once per seed, dense once.
        runs: which rows to train (comma-separated, default all): dense, kernel, channel, channel_erk, channel_x4,
            channel_x8, channel_x8_slow (death rate 0.2).
        channels: the mesh's channels per level instead of the CPU demo's 8,16,32,64 (e.g. 16,32,64,128).
    """
    seeds = [int(s) for s in as_list(sparse_seeds)]
    widths = [int(c) for c in as_list(channels)] or list(CPU_DEMO_OVERRIDES["channels"])
    if len(widths) != len(CPU_DEMO_OVERRIDES["strides"]):
        raise ValueError(f"--channels needs {len(CPU_DEMO_OVERRIDES['strides'])} widths, one per level of the demo "
                         f"network (strides {CPU_DEMO_OVERRIDES['strides']}); got {widths}.")
    rows = benchmark_sparse_training(workdir, dataset, seed, overrides={"channels": widths}, sparse_seeds=seeds,
                                     runs=as_list(runs) or None)
    header = (f"Dense vs sparse E2ENet training, {dataset} phantoms, {rows[0]['iterations']} iterations each "
              f"(CPU demo settings: channels {widths}, "
              f"patch {CPU_DEMO_OVERRIDES['patch_size']}), sparse kinds with mask seeds {seeds}, "
              f"Dice on the held-out fold. Machine: {machine_label(torch.get_num_threads())}.")
    print_report(write_sparse_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
