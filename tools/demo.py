"""The main job of this project's README: synthetic data -> train -> evaluate -> inference through monai.bundle."""

from __future__ import annotations

import fire

from e2enet_monai.bundle.demo import run_demo


def main(dataset: str = "btcv", workdir: str = "demo_output", overwrite: bool = False, seed: int = 0) -> None:
    """
    Generate a small synthetic dataset, train the bundle for a few minutes on CPU, evaluate and run inference, all
    through `python -m monai.bundle run`; print per-class Dice and where the NIfTI outputs are.

    Args:
        dataset: btcv (default), amos or brats.
        workdir: output folder (data, bundle copy with its weights, logs, segmentations).
        overwrite: replace an existing workdir.
        seed: phantom seed.
    """
    run_demo(dataset, workdir, overwrite=overwrite, seed=seed)


if __name__ == "__main__":
    fire.Fire(main)
