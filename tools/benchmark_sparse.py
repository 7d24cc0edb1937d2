"""Dense vs sparse (mesh density 0.2: kernel masks, channel masks uniform and ERK) training on phantoms, in one run."""

from __future__ import annotations

import fire
import torch

from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.sparse_training import benchmark_sparse_training, write_sparse_report


def main(dataset: str = "btcv", workdir: str = "benchmark_output/sparse", out_dir: str = "benchmark_output",
         seed: int = 0) -> None:
    """
    Train dense, kernel-sparse and channel-sparse (uniform and ERK) with the same data, seed and iterations (the CPU
    demo settings), evaluate each on the held-out fold, and write OUT_DIR/benchmark_sparse.md and .json.

    Args:
        dataset: btcv, amos or brats (synthetic phantoms of that layout).
        workdir: scratch folder for data and the four trained bundles (replaced).
        out_dir: folder for the report.
        seed: phantom seed.
    """
    rows = benchmark_sparse_training(workdir, dataset, seed)
    header = (f"Dense vs sparse E2ENet training, {dataset} phantoms, {rows[0]['iterations']} iterations each "
              f"(CPU demo settings: channels {CPU_DEMO_OVERRIDES['channels']}, "
              f"patch {CPU_DEMO_OVERRIDES['patch_size']}), "
              f"Dice on the held-out fold. Machine: {machine_label(torch.get_num_threads())}.")
    md, js = write_sparse_report(rows, out_dir, header)
    print(md.read_text())
    print(f"wrote {md} and {js}")


if __name__ == "__main__":
    fire.Fire(main)
