"""Sliding window vs top-k patch inference on full-size synthetic CT (BTCV bundle), side by side in one CPU run."""

from __future__ import annotations

import fire

from e2enet_monai.benchmarks.inference import (
    DEFAULT_KS,
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    benchmark_inference,
    command_line,
    write_inference_report,
)
from e2enet_monai.benchmarks.model_stats import machine_label
from e2enet_monai.benchmarks.report import print_report


def main(workdir: str = "benchmark_output/inference", out_dir: str = "benchmark_output",
         shape: tuple = DEFAULT_SHAPE, spacing: tuple = DEFAULT_SPACING, ks: tuple = DEFAULT_KS,
         num_train: int = 8, num_test: int = 2, threads: int = 2, seed: int = 0, invert_labels: bool = True,
         reuse_training: bool = False, train_overrides: dict | None = None, topk_overrides: dict | None = None,
         global_overrides: dict | None = None, topk_inference_overrides: dict | None = None) -> None:
    """
    Train the BTCV bundle (sliding window), the global network of its top-k model (whole shrunk volumes) and the
    top-k model on phantoms of SHAPE voxels at SPACING mm, then time
    the whole inference pipeline (load, preprocess, infer, postprocess, write) of NUM_TEST held-out phantoms with
    sliding window and with top-k at each K of KS (0: the global network alone, -1: every candidate); write
    OUT_DIR/benchmark_inference.md, .json and .png.

    Args:
        workdir: scratch folder (replaced): data, trained bundle, outputs, logs.
        out_dir: report folder.
        shape: phantom size in voxels (x, y, z).
        spacing: phantom voxel size in mm.
        ks: patch counts for top-k; 0 is the global network alone (coarse prediction), -1 every candidate.
        num_train: training phantoms.
        num_test: held-out phantoms timed and scored.
        threads: torch intra-op threads of the timed processes.
        seed: phantom seed.
        invert_labels: postprocess both methods by inverting the argmax label map (nearest neighbour); False
            inverts the probabilities, as the bundles do by default.
        reuse_training: keep the phantoms in WORKDIR and the training stages whose settings (and those of the
            stages before them) are unchanged.
        train_overrides: bundle config ids changed in the sliding-window training (and inherited by the others),
            e.g. "{'sparse_training': False, 'epochs': 20}" (Python literals: False, not false).
        topk_overrides: config ids changed in the top-k training, e.g. "{'epochs': 8}".
        global_overrides: config ids changed in the global network's training, e.g. "{'epochs': 20}".
        topk_inference_overrides: config ids changed in the top-k inference runs only, e.g.
            "{'topk_selection': 'learned'}" (with REUSE_TRAINING, no stage is retrained).
    """
    rows = benchmark_inference(workdir, shape, spacing, ks, num_train, num_test, threads, seed,
                               train_overrides=train_overrides, topk_overrides=topk_overrides,
                               invert_labels=invert_labels, reuse_training=reuse_training,
                               global_overrides=global_overrides, topk_inference_overrides=topk_inference_overrides)
    sw, minutes = rows[0], rows[0]["train_minutes"]
    post = "label map inverted by nearest neighbour" if invert_labels else "probabilities inverted"
    header = (f"Sliding window (overlap 0.5, Gaussian) vs top-k patch inference, BTCV bundle, {num_test} held-out "
              f"phantoms of {tuple(shape)} voxels at {tuple(spacing)} mm (network input {sw['volume']}), same "
              f"local E2ENet and weights (patch {sw['patch_size']}; trained {minutes['train']:.0f} min, then the "
              f"global network {minutes['train_global']:.0f} min and the top-k model {minutes['train_topk']:.0f} "
              f"min, on {num_train} phantoms); postprocessing: {post}; times are means per volume. "
              f"Machine: {machine_label(threads)}. Command: "
              + command_line(invert_labels, reuse_training, train_overrides, topk_overrides, global_overrides,
                             shape, ks, spacing, topk_inference_overrides))
    print_report(write_inference_report(rows, out_dir, header))


if __name__ == "__main__":
    fire.Fire(main)
