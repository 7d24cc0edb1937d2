"""Check a raw BTCV / AMOS22 / BraTS folder and write its datalist JSON with 5 cross-validation folds."""

from __future__ import annotations

import fire

from e2enet_monai.data.prepare import PREPARERS, DatasetError, prepare_dataset


def main(dataset: str, raw_dir: str, output: str | None = None, seed: int = 0, overwrite: bool = False,
         read_data: bool = True) -> None:
    """
    Write a datalist for a bundle's train.json (--dataset_dir <folder of the datalist>).

    Args:
        dataset: btcv, amos, brats2021, brats2023 or msd_brain.
        raw_dir: the dataset folder as downloaded (BTCV: the one holding RawData; AMOS: holding amos22 or imagesTr;
            BraTS: holding the case folders; MSD: holding Task01_BrainTumour or imagesTr).
        output: datalist path (default RAW_DIR/datalist.json); paths inside are relative to its folder.
        seed: seed of the fold assignment.
        overwrite: replace an existing datalist.
        read_data: decompress every file to catch truncated ones (--read_data False checks headers only).
    """
    if dataset not in PREPARERS:
        raise SystemExit(f"unknown dataset {dataset!r}; choose from {sorted(PREPARERS)}.")
    try:
        path = prepare_dataset(dataset, raw_dir, output or f"{raw_dir}/datalist.json", seed, overwrite, read_data)
    except (DatasetError, FileExistsError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    fire.Fire(main)
