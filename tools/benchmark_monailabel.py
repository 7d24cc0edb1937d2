"""How long a MONAI Label /infer takes for one full-size CT: the sliding-window and the top-k (_fast) model."""

from __future__ import annotations

import tempfile

import fire

import e2enet_monai
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.monailabel_time import benchmark_monailabel
from e2enet_monai.benchmarks.report import print_report, write_report
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(bundle: str = "demo_output/e2enet_btcv_segmentation", shape: str = "512x512x200",
         spacing: str = "0.8x0.8x2.5", repeats: int = 1, port: int = 8765, out_dir: str = "benchmark_output",
         workdir: str | None = None) -> None:
    """
    Serve BUNDLE (default: the demo's trained bundle, which holds sliding-window and top-k weights) with a real
    MONAI Label server on 127.0.0.1:PORT, upload one phantom CT of SHAPE voxels at SPACING mm and time /infer of
    each served model as 3D Slicer asks for it (NRRD), REPEATS interleaved rounds; /info/ is sent every 2 s during
    each inference and its longest wait reported. Writes OUT_DIR/benchmark_monailabel.md and .json.

    Args:
        bundle: a bundle folder with models/model.pt (and models/model_topk.pt for the fast model).
        shape: XxYxZ voxels of the CT.
        spacing: XxYxZ voxel size in mm.
        repeats: interleaved rounds (the median is reported).
        port: the server's port on 127.0.0.1.
        out_dir: output folder.
        workdir: where the app, the CT and the server log go (default: a temporary folder, removed).
    """
    dims = [int(v) for v in str(shape).split("x")]
    mm = [float(v) for v in str(spacing).split("x")]
    with tempfile.TemporaryDirectory() as tmp:
        rows = benchmark_monailabel(bundle, workdir or tmp, dims, mm, repeats, port)
    base = next((r["seconds"] for r in rows if not r["fast"]), None)
    header = (f"MONAI Label 0.8.5 /infer (NRRD reply, as 3D Slicer asks) of one {shape} phantom CT at {spacing} mm, "
              f"bundle {bundle}, e2enet-monai {e2enet_monai.__version__}, median of {repeats} interleaved run(s); "
              f"/info/ sent every 2 s during each inference. Machine: {machine_label(2)} (the server uses PyTorch's "
              f"default threads). Command: python tools/benchmark_monailabel.py --bundle {bundle} --shape {shape} "
              f"--spacing {spacing} --repeats {repeats}")
    cells = [[r["model"], f"{r['seconds']:.1f}", f"{base / r['seconds']:.1f}x" if base else "-",
              f"{r['info_wait_max']:.2f} ({r['info_requests']} requests)"] for r in rows]
    written = write_report(out_dir, "benchmark_monailabel", header,
                           ["model", "seconds per /infer", "speed-up vs sliding window",
                            "longest /info/ wait during it, s"], cells, rows)
    print_report(written)


if __name__ == "__main__":
    fire.Fire(main)
