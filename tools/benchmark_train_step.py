"""Seconds per training step of the CPU demo network: narrow convolutions through channels-last maps vs nn.Conv3d."""

from __future__ import annotations

import fire

import e2enet_monai
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.benchmarks.train_step import benchmark_train_step, write_train_step_report
from e2enet_monai.utils.cli import as_list
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(threads: str | tuple = "1,2", steps: int = 20, out_dir: str = "benchmark_output") -> None:
    """
    Time training steps of the CPU demo network (forward, loss, backward, AdamW; 4 patches of 32 x 48 x 48) with
    its narrow convolutions trained through channels-last maps (the default) and with nn.Conv3d throughout,
    interleaved, in one fresh process; write OUT_DIR/benchmark_train_step.md and .json.

    Args:
        threads: comma-separated intra-op thread counts.
        steps: timed rounds per thread count (the median is reported), after one warm-up step of each.
        out_dir: output folder.
    """
    thread_list = [int(t) for t in as_list(threads)]
    rows = benchmark_train_step(thread_list, steps)
    header = (f"CPU training step of the demo network (channels 8-64, 4 patches of 32x48x48, 14 classes, AdamW), "
              f"float32, e2enet-monai {e2enet_monai.__version__}, median of {steps} interleaved steps after a "
              f"warm-up. Machine: {machine_label(max(thread_list))}. Command: python tools/benchmark_train_step.py "
              f"--threads {','.join(map(str, thread_list))} --steps {steps}")
    print_report(write_train_step_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
