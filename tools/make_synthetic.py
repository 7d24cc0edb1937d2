"""Write deterministic synthetic phantom datasets in the raw folder layout of BTCV, AMOS22 or BraTS."""

from __future__ import annotations

import fire

from e2enet_monai.data.phantoms import WRITERS, write_synthetic


def main(dataset: str, output_dir: str, seed: int = 0, **sizes) -> None:
    """
    Write a phantom dataset (the same seed gives the same files).

    Args:
        dataset: btcv (RawData/Training/{img,label}), amos (amos22/imagesTr...), brats2021, brats2023 or msd_brain.
        output_dir: folder to write the raw layout into (created if missing).
        seed: base seed; case i uses seed + i.
        sizes: counts per split, e.g. --num_train 8 --num_test 2 (btcv, amos), --num_val 2 --num_mri 1 (amos),
            --num_cases 6 (brats*, msd_brain), and --shape 128,128,48 for the voxel grid.
    """
    if dataset not in WRITERS:
        raise SystemExit(f"unknown dataset {dataset!r}; choose from {sorted(WRITERS)}.")
    root = write_synthetic(dataset, output_dir, seed=seed, **sizes)
    print(f"wrote synthetic {dataset} phantoms to {root}")


if __name__ == "__main__":
    fire.Fire(main)
