"""Sliding window vs top-k inference of the BTCV bundle as it ships (random weights), with E2ENet and DynUNet."""

from __future__ import annotations

import fire

import e2enet_monai
from e2enet_monai.benchmarks.inference import LOCAL_NETWORKS, benchmark_shipped_inference, write_shipped_report
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report
from e2enet_monai.utils.cli import as_list
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(workdir: str = "benchmark_output/inference_shipped", out_dir: str = "benchmark_output",
         shape: str = "512x512x200", spacing: str = "0.8x0.8x2.5", ks: str | tuple = "0,1,5,30",
         local_networks: str | tuple = ",".join(LOCAL_NETWORKS), threads: int = 2,
         invert_labels: bool = False) -> None:
    """
    Time the whole inference pipeline of one phantom CT of SHAPE voxels at SPACING mm with the BTCV bundle in its
    shipped network configuration (seeded random weights): sliding window and top-k at each K of KS (0: the global
    network alone), with each local network of LOCAL_NETWORKS (e2enet, dynunet: the nnU-Net-like DynUNet), each
    method a fresh process with THREADS threads; network time, FLOPs and peak memory too. Writes
    OUT_DIR/benchmark_inference_shipped.md and .json.

    Args:
        workdir: scratch folder (replaced).
        out_dir: report folder.
        shape: XxYxZ voxels of the CT.
        spacing: XxYxZ voxel size in mm.
        ks: comma-separated patch counts of top-k (0: no patch).
        local_networks: comma-separated among e2enet and dynunet.
        threads: torch intra-op threads of each run.
        invert_labels: sliding window inverts its argmax label map (nearest) instead of the probabilities (the
            bundles' default); top-k always inverts its label map.
    """
    dims = [int(v) for v in str(shape).split("x")]
    mm = [float(v) for v in str(spacing).split("x")]
    k_list = [int(k) for k in as_list(ks)]
    nets = [str(n) for n in as_list(local_networks)]
    rows = benchmark_shipped_inference(workdir, dims, mm, k_list, nets, threads, invert_labels)
    post = "argmax label map inverted (nearest)" if invert_labels else "probabilities inverted (trilinear)"
    header = (f"Sliding window (overlap 0.5, Gaussian) vs top-k, BTCV bundle in its shipped configuration (local "
              f"network on {'x'.join(map(str, rows[0]['patch_size']))} patches, global E2ENet 16-256 on the volume "
              f"shrunk 3x), random weights, one {shape} phantom CT at {spacing} mm (network input "
              f"{'x'.join(map(str, rows[0]['volume']))}); postprocessing: sliding window {post}, top-k its label map "
              f"inverted (nearest); each method a fresh process, freed memory reused as the bundles do. "
              f"e2enet-monai {e2enet_monai.__version__}. Machine: {machine_label(threads)}. Command: python "
              f"tools/benchmark_inference_shipped.py --shape {shape} --spacing {spacing} --ks "
              f"{','.join(map(str, k_list))} --local_networks {','.join(nets)} --threads {threads} "
              f"--invert_labels {invert_labels}")
    print_report(write_shipped_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
