"""Dense vs sparse (mesh density 0.2: kernel masks, channel masks uniform, ERK and in multiples of 4 and 8) training
on phantoms, in one run."""

from __future__ import annotations

import fire
import torch

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.benchmarks.sparse_training import benchmark_sparse_training, write_sparse_report
from e2enet_monai.utils.cli import as_list


def main(dataset: str = "btcv", workdir: str = "benchmark_output/sparse", out_dir: str = "benchmark_output",
         seed: int = 0, sparse_seeds: str | int | tuple = (0, 1)) -> None:
    """
    Train dense, kernel-sparse and channel-sparse (uniform, ERK, multiples of 4 and 8) with the same data, seed and
    iterations (the CPU demo settings), evaluate each on the held-out fold, and write OUT_DIR/benchmark_sparse.md
    and .json.

    Args:
        dataset: btcv, amos or brats (synthetic phantoms of that layout).
        workdir: scratch folder for data and the trained bundles (replaced).
        out_dir: folder for the report.
        seed: phantom seed.
        sparse_seeds: mask seeds (comma-separated); each sparse kind is trained once per seed, dense once.
    """
    seeds = [int(s) for s in as_list(sparse_seeds)]
    rows = benchmark_sparse_training(workdir, dataset, seed, sparse_seeds=seeds)
    header = (f"Dense vs sparse E2ENet training, {dataset} phantoms, {rows[0]['iterations']} iterations each "
              f"(CPU demo settings: channels {CPU_DEMO_OVERRIDES['channels']}, "
              f"patch {CPU_DEMO_OVERRIDES['patch_size']}), sparse kinds with mask seeds {seeds}, "
              f"Dice on the held-out fold. Machine: {machine_label(torch.get_num_threads())}.")
    print_report(write_sparse_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
