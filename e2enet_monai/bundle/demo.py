"""End-to-end demo on synthetic phantoms: data -> datalist -> train -> evaluate -> inference, via monai.bundle."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

from e2enet_monai.bundle.runner import CPU_DEMO_OVERRIDES, read_dice_table, run_bundle
from e2enet_monai.data import prepare_dataset, write_synthetic

__all__ = ["DEMO_DATASETS", "run_demo"]

REPO_BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# bundle name -> (phantom writer, datalist preparer, phantom sizes, inference inputs relative to the raw folder)
DEMO_DATASETS = {
    "btcv": ("e2enet_btcv_segmentation", "btcv", {"num_train": 8, "num_test": 2}, "RawData/Testing/img/*.nii.gz"),
    "amos": ("e2enet_amos_ct_segmentation", "amos", {"num_train": 8, "num_val": 0, "num_test": 2}, "amos22/imagesTs/*.nii.gz"),
    "brats": ("e2enet_brats_segmentation", "brats2021", {"num_cases": 8}, None),
}


def run_demo(dataset: str = "btcv", workdir: str | os.PathLike = "demo_output", overwrite: bool = False,
             overrides: dict | None = None, seed: int = 0) -> dict[str, float]:
    """
    Run the whole user journey on synthetic phantoms and return the per-class Dice of the held-out cases.

    Args:
        dataset: ``btcv``, ``amos`` or ``brats``.
        workdir: folder for data, a working copy of the bundle, logs and outputs.
        overwrite: remove an existing ``workdir`` first (otherwise an existing one is an error).
        overrides: extra config overrides on top of :data:`CPU_DEMO_OVERRIDES`.
        seed: phantom seed.
    """
    if dataset not in DEMO_DATASETS:
        raise ValueError(f"unknown demo dataset {dataset!r}; choose from {sorted(DEMO_DATASETS)}.")
    bundle_name, kind, sizes, test_glob = DEMO_DATASETS[dataset]
    if not (REPO_BUNDLES / bundle_name).is_dir():
        raise FileNotFoundError(f"bundle folder {REPO_BUNDLES / bundle_name} not found: run the demo from a clone of "
                                f"the repository installed with `pip install -e .`.")
    work = Path(workdir).resolve()
    if work.exists():
        if not overwrite:
            raise FileExistsError(f"{work} exists; pass --overwrite to replace it.")
        shutil.rmtree(work)
    raw, bundle, logs = work / "data", work / bundle_name, work / "logs"
    logs.mkdir(parents=True)
    shutil.copytree(REPO_BUNDLES / bundle_name, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    t0 = time.time()
    print(f"[1/5] writing synthetic {kind} phantoms to {raw}", flush=True)
    write_synthetic(kind, raw, seed=seed, **sizes)
    print("[2/5] preparing the datalist (5 folds)", flush=True)
    prepare_dataset(kind, raw, raw / "datalist.json")
    train_overrides = {**CPU_DEMO_OVERRIDES, "dataset_dir": str(raw), **(overrides or {})}
    print(f"[3/5] training {bundle_name} on CPU (python -m monai.bundle run, log: {logs / 'train.log'})", flush=True)
    run_bundle(bundle, ["train.json"], train_overrides, log_file=logs / "train.log")
    print(f"[4/5] evaluating the best checkpoint on the held-out fold (log: {logs / 'evaluate.log'})", flush=True)
    run_bundle(bundle, ["train.json", "evaluate.json"], train_overrides, log_file=logs / "evaluate.log")
    if test_glob is not None:
        inputs = sorted(str(p) for p in raw.glob(test_glob))
    else:  # BraTS: the 4 modality files of two cases
        from e2enet_monai.data import brats_image_lists

        inputs = brats_image_lists(raw)[:2]
    out_dir = work / "segmentations"
    print(f"[5/5] inference on {len(inputs)} image(s) into {out_dir}", flush=True)
    net = {k: train_overrides[k] for k in ("channels", "strides", "patch_size")}
    run_bundle(bundle, ["inference.json"], {**net, "datalist": inputs, "output_dir": str(out_dir)},
               log_file=logs / "inference.log")
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    table = read_dice_table(bundle / "eval", channel_def)
    print(f"\nPer-class Dice on the held-out phantoms (fold 0, resampled grid), after {time.time() - t0:.0f} s:")
    for name, value in table.items():
        print(f"  {name:<28} {value:.3f}")
    valid = [v for v in table.values() if not math.isnan(v)]
    print(f"  {'mean':<28} {sum(valid) / len(valid):.3f}")
    print(f"\nSegmentations (uint8 NIfTI on each input's grid): {out_dir}")
    for p in sorted(out_dir.rglob("*.nii.gz")):
        print(f"  {p}")
    print(f"Trained bundle: {bundle} (weights: {bundle / 'models/model.pt'})")
    return table
