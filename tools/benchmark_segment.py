"""How long e2enet-segment takes for one full-size CT, sliding window against --fast (top-k), side by side."""

from __future__ import annotations

import tempfile

import fire

import e2enet_monai
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report, write_report
from e2enet_monai.benchmarks.segment_time import MODES, benchmark_segment
from e2enet_monai.utils.cli import as_list
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(bundle: str = "btcv", shape: str = "512x512x200", spacing: str = "0.8x0.8x2.5", threads: int = 2,
         repeats: int = 1, modes: str | tuple = ",".join(MODES), out_dir: str = "benchmark_output",
         workdir: str | None = None) -> None:
    """
    Run the real ``e2enet-segment`` command on one phantom CT of SHAPE voxels at SPACING mm with the shipped
    BUNDLE's real network configuration (seeded random weights), in each mode, REPEATS interleaved rounds of fresh
    processes with THREADS threads, and write OUT_DIR/benchmark_segment.md and .json.

    Args:
        bundle: btcv or amos (CT bundles).
        shape: XxYxZ voxels of the CT.
        spacing: XxYxZ voxel size in mm.
        threads: intra-op threads of each run.
        repeats: interleaved rounds (the median is reported).
        modes: comma-separated, among "sliding window" and "fast (top-k)".
        out_dir: output folder.
        workdir: where the CT, the bundle copy and the outputs go (default: a temporary folder, removed).
    """
    dims = [int(v) for v in str(shape).split("x")]
    mm = [float(v) for v in str(spacing).split("x")]
    chosen = [str(m) for m in as_list(modes)]
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark_segment(workdir or tmp, bundle, dims, mm, threads, repeats, chosen)
    base = next((r["wall_s"] for r in rows if r["mode"] == "sliding window"), None)
    header = (f"e2enet-segment on one {shape} CT at {spacing} mm (resampled to "
              f"{'x'.join(map(str, rows[0]['resampled_shape']))}), bundle {bundle} with its real network "
              f"configuration and random weights, e2enet-monai {e2enet_monai.__version__}, median of {repeats} "
              f"interleaved run(s), each a fresh process. Machine: {machine_label(threads)}. Command: python "
              f"tools/benchmark_segment.py --bundle {bundle} --shape {shape} --spacing {spacing} --threads {threads} "
              f"--repeats {repeats}")
    cells = [[r["mode"], r["network_runs"], f"{r['wall_s']:.1f}", f"{r['read_s']:.1f}", f"{r['inference_s']:.1f}",
              f"{r['write_s']:.1f}", f"{base / r['wall_s']:.1f}x" if base else "-"] for r in rows]
    written = write_report(out_dir, "benchmark_segment", header,
                           ["mode", "network runs", "seconds (whole command)", "read", "inference", "write",
                            "speed-up vs sliding window"], cells, rows)
    print_report(written)


if __name__ == "__main__":
    fire.Fire(main)
