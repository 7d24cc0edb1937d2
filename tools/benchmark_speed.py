"""E2ENet (dense, kernel-sparse, channel-sparse compacted), the nnU-Net-like DynUNet and SegResNet: CPU inference time
side by side, in torch eager and in ONNX Runtime and OpenVINO."""

from __future__ import annotations

import fire

import e2enet_monai
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.benchmarks.speed import SPEED_NETWORKS, benchmark_speed, write_speed_report
from e2enet_monai.inferers.runtime import BACKENDS
from e2enet_monai.utils.cli import as_list
from e2enet_monai.utils.errors import cli_entry


def _shape(text: str) -> list[int]:
    return [int(v) for v in str(text).split("x")]


@cli_entry
def main(shapes: str | tuple = "96x96x96,96x128x128", threads: str | tuple = "1,2", repeats: int = 3,
         networks: str | tuple = ",".join(SPEED_NETWORKS), runtimes: str | tuple = ",".join(BACKENDS),
         reuse_memory: bool = True, out_dir: str = "benchmark_output") -> None:
    """
    Time one forward pass (batch 1, float32) of each network in each runtime at each shape and thread count, each
    runtime in a fresh process with the networks' repetitions interleaved, and write OUT_DIR/benchmark_speed.md,
    .json and .png.

    Args:
        shapes: comma-separated spatial shapes DxHxW (default 96^3 and the bundles' patch 96x128x128).
        threads: comma-separated intra-op thread counts.
        repeats: timed rounds (the median is reported), after one warm-up run of every network.
        networks: comma-separated row labels among the defaults.
        runtimes: comma-separated among torch (eager), onnxruntime, openvino (pip install e2enet-monai[runtimes]).
        reuse_memory: keep freed memory for reuse in the torch runs, as the bundles do (False: glibc's default).
        out_dir: output folder.
    """
    shape_list = [_shape(s) for s in as_list(shapes)]
    thread_list = [int(t) for t in as_list(threads)]
    runtime_list = [str(r) for r in as_list(runtimes)]
    network_list = [str(n) for n in as_list(networks)]
    rows = benchmark_speed(shape_list, thread_list, repeats, network_list, runtime_list, reuse_memory=reuse_memory)
    memory = "reused in torch (as the bundles do)" if reuse_memory else "returned (glibc's default)"
    # the command as given, so that the header reproduces a run of some of the networks too
    subset = "" if network_list == list(SPEED_NETWORKS) else f' --networks "{",".join(network_list)}"'
    header = (f"CPU inference, batch 1, float32, e2enet-monai {e2enet_monai.__version__}, median of {repeats} "
              f"interleaved runs after a warm-up, freed memory {memory}. Machine: {machine_label(max(thread_list))}. "
              f"Command: python tools/benchmark_speed.py --shapes "
              f"{','.join('x'.join(map(str, s)) for s in shape_list)} --threads {','.join(map(str, thread_list))} "
              f"--repeats {repeats} --runtimes {','.join(runtime_list)} --reuse_memory {reuse_memory}{subset}")
    print_report(write_speed_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
