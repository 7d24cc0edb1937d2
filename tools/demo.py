"""The main job of this project's README: synthetic data -> train -> evaluate -> inference through monai.bundle."""

from __future__ import annotations

import fire

from e2enet_monai.bundle.demo import run_demo
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(dataset: str = "btcv", workdir: str = "demo_output", overwrite: bool = False, seed: int = 0,
         topk: bool = True) -> None:
    """
    Generate a small synthetic dataset, train the bundle for a few minutes on CPU, evaluate and run inference, all
    through `python -m monai.bundle run`; print per-class Dice and where the NIfTI outputs are.

    Args:
        dataset: btcv (default), amos or brats.
        workdir: output folder (data, the trained bundle with its weights, logs, segmentations).
        overwrite: replace an existing workdir.
        seed: phantom seed.
        topk: also train the top-k model and run top-k inference (about 2 more minutes).
    """
    run_demo(dataset, workdir, overwrite=overwrite, seed=seed, topk=topk)


if __name__ == "__main__":
    fire.Fire(main)
