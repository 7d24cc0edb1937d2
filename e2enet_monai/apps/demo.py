"""End-to-end demo on synthetic phantoms: data -> datalist -> train -> evaluate -> inference, via monai.bundle."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import fire

from e2enet_monai.apps.config_values import set_config_values
from e2enet_monai.apps.runner import read_dice_table, run_bundle
from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundles_dir
from e2enet_monai.data import brats_image_lists, prepare_dataset, write_synthetic
from e2enet_monai.utils.errors import InputError, cli_entry

__all__ = ["CPU_DEMO_OVERRIDES", "DEMO_GLOBAL_OVERRIDES", "DEMO_NUM_SAMPLES", "DEMO_SIZES", "DEMO_TOPK_OVERRIDES",
           "DEMO_VALUES", "GLOBAL_CPU_OVERRIDES", "TOPK_CPU_OVERRIDES", "TOPK_NETWORK_IDS", "cli", "main", "run_demo"]

# Settings for minutes-long CPU training on synthetic phantoms (the demo and the end-to-end tests): a small E2ENet
# (4 levels 8-64, the same blocks and sparse DSFF mesh), small patches and AdamW, which converges in hundreds of
# iterations where the paper's SGD recipe needs hundreds of thousands, and no mirroring (left/right organs are told
# apart by context, which a short run does not learn under flips). Real training uses the bundle defaults.
CPU_DEMO_OVERRIDES: dict[str, object] = {
    "channels": [8, 16, 32, 64],
    "strides": [1, 2, 2, 2],
    "patch_size": [32, 48, 48],
    "num_samples": 4,
    "batch_size": 1,
    "optimizer_name": "adamw",
    "learning_rate": 0.02,
    "epochs": 6,
    "epoch_length": 100,
    "val_interval": 6,
    "sparse_update_frequency": 100,
    "num_workers": 0,
    "flip_prob": 0.0,
}

# top-k training on CPU: small global network, local network frozen from the sliding-window bundle
TOPK_CPU_OVERRIDES = {
    "global_channels": [8, 16, 32, 64],
    "global_strides": [1, 2, 2, 2],
    "canvas_size": [96, 160, 160],
    "freeze_local": True,
    "learning_rate": 0.003,
    "epochs": 4,
    "epoch_length": 50,
    "val_interval": 4,
    "num_samples": 1,
}

# the global network first, alone on whole shrunk volumes (train_global.json): what it sees in inference, at about
# 1 s per volume on 2 cores; the top-k training then keeps it frozen and learns the scores and the fusion gate
GLOBAL_CPU_OVERRIDES = {
    "learning_rate": 0.003,
    "aug_prob": 0.0,
    "epochs": 12,
    "epoch_length": 100,
    "val_interval": 4,
}


# phantoms per demo dataset (keyword arguments of write_synthetic)
DEMO_SIZES = {
    "btcv": {"num_train": 8, "num_test": 2},
    "amos": {"num_train": 8, "num_val": 0, "num_test": 2},
    "brats": {"num_cases": 8},
}
# patches per iteration in every demo: the bundles' own 2, not CPU_DEMO_OVERRIDES' 4 (the benchmarks' setting), the
# same Dice within the spread of runs (below) in half the training time
DEMO_NUM_SAMPLES = 2
# per dataset, written into the trained bundle on top of CPU_DEMO_OVERRIDES and DEMO_NUM_SAMPLES. The CT bundles: two
# thirds of the crops centred on an organ, so 600 iterations also see the small ones (gallbladder, adrenals,
# esophagus) often enough; one run each on the same phantoms gave mean Dice 0.586 at the bundle's 1/3, 0.664 at 2/3 (4
# patches). They need their 600 iterations (400 gave 0.55-0.62, 2026-12-03); with 2 patches BTCV's demo (one thread)
# gave 0.642, 0.854 and 0.745 with phantom seeds 0-2, AMOS's 0.690 (seed 0), within the spread of 4-patch runs
# (0.585-0.824 for BTCV, 0.782 and 0.855 for AMOS; 2026-12-04): a short run's small organs move with the phantoms and
# with float rounding. AdamW at 0.01 instead of 0.02 lost them (0.535 and 0.536, seeds 0 and 1). BraTS: its three
# nested regions reached a mean Dice of 0.935 after 600 iterations, 0.947 after 300 (one run each, 2026-12-01) and
# 0.919 after 150 of 4 patches (2026-12-03), 0.903 after 150 of 2 (2026-12-04), so it trains 150 (table in its
# docs/README.md), in every run of the tests too.
DEMO_VALUES: dict[str, dict[str, object]] = {
    "btcv": {"pos_fraction": 0.67},
    "amos": {"pos_fraction": 0.67},
    "brats": {"epochs": 3, "epoch_length": 50, "val_interval": 3},
}
# the top-k model's network ids (inference needs them to rebuild it): those the demo sets are written into the
# trained bundle
TOPK_NETWORK_IDS = ("global_channels", "global_strides", "topk_fusion")
# the two top-k stages on the demo phantoms (128 x 128 x 48 voxels): 200 iterations of the global network on whole
# shrunk volumes, then 25 of the score head and the fusion gate with both networks frozen, each iteration a
# backward pass through the frozen local network on 6 patches. The gate settles within them: on the same networks
# 10, 25 and 50 iterations gave a top-k validation Dice of 0.7050, 0.7055 and 0.7056 (2026-12-04); 50 and 100 gave
# 0.836 and 0.837 on other ones (2026-12-03).
DEMO_GLOBAL_OVERRIDES = {**GLOBAL_CPU_OVERRIDES, "epochs": 2, "val_interval": 2}
DEMO_TOPK_OVERRIDES = {**TOPK_CPU_OVERRIDES, "canvas_size": [64, 96, 96], "epochs": 1, "epoch_length": 25,
                       "val_interval": 1}


def _training_values(dataset: str, overrides: dict | None) -> tuple[dict, dict]:
    """What the trained bundle's configs get: the CPU demo settings (sliding-window configs) and the top-k ids."""
    values = {**CPU_DEMO_OVERRIDES, "num_samples": DEMO_NUM_SAMPLES, **DEMO_VALUES[dataset], **(overrides or {})}
    return values, {k: TOPK_CPU_OVERRIDES[k] for k in TOPK_NETWORK_IDS if k in TOPK_CPU_OVERRIDES}


def run_demo(dataset: str = "btcv", workdir: str | os.PathLike = "demo_output", overwrite: bool = False,
             overrides: dict | None = None, seed: int = 0, topk: bool = True,
             bundles: str | os.PathLike | None = None) -> dict[str, float]:
    """
    Run the whole user journey on synthetic phantoms and return the per-class Dice of the held-out cases.

    The bundle copy in ``workdir`` is trained as it is: the CPU demo settings (:data:`CPU_DEMO_OVERRIDES`,
    :data:`DEMO_NUM_SAMPLES`, :data:`DEMO_VALUES` of ``dataset`` and ``overrides``) are first written into its own
    configs, so every command of its ``docs/README.md`` works on it as written, and so does a packaged copy of it.
    Only ``dataset_dir`` (training), ``datalist`` and ``output_dir`` (inference) are passed on the command line, as
    the docs do.

    Args:
        dataset: ``btcv``, ``amos`` or ``brats``.
        workdir: folder for data, the trained bundle, logs and outputs.
        overwrite: remove an existing ``workdir`` first (otherwise an existing one is an error).
        overrides: config values on top of :data:`CPU_DEMO_OVERRIDES`, written into the bundle's configs.
        seed: phantom seed.
        topk: also train the top-k model (``models/model_global.pt``, then ``models/model_topk.pt``) and run
            top-k inference.
        bundles: the folder holding the shipped bundles (default: :func:`~e2enet_monai.bundle.bundles_dir`).
    """
    if dataset not in SHIPPED_BUNDLES:
        raise InputError(f"unknown demo dataset {dataset!r}; choose from {sorted(SHIPPED_BUNDLES)}.")
    info = SHIPPED_BUNDLES[dataset]
    bundle_name, kind, sizes, test_glob = info.folder, info.dataset, DEMO_SIZES[dataset], info.test_glob
    source = bundles_dir(bundles) / bundle_name
    work = Path(workdir).resolve()
    if work.exists():
        if not overwrite:
            raise InputError(f"{work} exists (an earlier demo's data, weights and outputs); pass --overwrite True to "
                             f"replace it, or --workdir <another folder> to keep it.")
        shutil.rmtree(work)
    raw, bundle, logs = work / "data", work / bundle_name, work / "logs"
    logs.mkdir(parents=True)
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    values, topk_values = _training_values(dataset, overrides)
    set_config_values(bundle, values, ["train.json", "inference.json"])
    set_config_values(bundle, topk_values, ["train_topk.json", "inference_topk.json"])
    steps = 7 if topk else 5
    t0 = time.time()
    print(f"[1/{steps}] writing synthetic {kind} phantoms to {raw}", flush=True)
    write_synthetic(kind, raw, seed=seed, **sizes)
    print(f"[2/{steps}] preparing the datalist (5 folds)", flush=True)
    prepare_dataset(kind, raw, raw / "datalist.json")
    data = {"dataset_dir": str(raw)}
    print(f"[3/{steps}] training {bundle_name} on CPU (python -m monai.bundle run, log: {logs / 'train.log'})",
          flush=True)
    run_bundle(bundle, ["train.json"], data, log_file=logs / "train.log")
    print(f"[4/{steps}] evaluating the best checkpoint on the held-out fold (log: {logs / 'evaluate.log'})", flush=True)
    run_bundle(bundle, ["train.json", "evaluate.json"], data, log_file=logs / "evaluate.log")
    if topk:
        print(f"[5/{steps}] training the top-k model: the global network on whole shrunk volumes, then the patch "
              f"scores and fusion gate (logs: {logs / 'train_global.log'}, {logs / 'train_topk.log'})", flush=True)
        run_bundle(bundle, ["train.json", "train_topk.json", "train_global.json"], {**data, **DEMO_GLOBAL_OVERRIDES},
                   log_file=logs / "train_global.log")
        run_bundle(bundle, ["train.json", "train_topk.json"],
                   {**data, **DEMO_TOPK_OVERRIDES, "local_checkpoint": str(bundle / "models/model.pt"),
                    "global_checkpoint": str(bundle / "models/model_global.pt"), "freeze_global": True},
                   log_file=logs / "train_topk.log")
    if test_glob is not None:
        inputs = sorted(str(p) for p in raw.glob(test_glob))
    else:  # BraTS: the 4 modality files of two cases
        inputs = brats_image_lists(raw)[:2]
    out_dir = work / "segmentations"
    step = steps - 1 if topk else steps
    print(f"[{step}/{steps}] inference on {len(inputs)} image(s) into {out_dir}", flush=True)
    run_bundle(bundle, ["inference.json"], {"datalist": inputs, "output_dir": str(out_dir)},
               log_file=logs / "inference.log")
    if topk:
        print(f"[{steps}/{steps}] top-k inference (K = 5) into {work / 'segmentations_topk'}", flush=True)
        run_bundle(bundle, ["inference.json", "inference_topk.json"],
                   {"datalist": inputs, "output_dir": str(work / "segmentations_topk")},
                   log_file=logs / "inference_topk.log")
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
    print(f"\nTrained bundle: {bundle} (weights: models/model.pt{', model_topk.pt' if topk else ''}; its configs hold "
          f"the demo settings, so its docs/README.md commands run as written). For example:")
    print(f"  cd {bundle}")
    print("  python -m monai.bundle run --config_file configs/inference.json --datalist \"['/path/a.nii.gz']\" "
          "--output_dir out")
    return table


@cli_entry
def main(dataset: str = "btcv", workdir: str = "demo_output", overwrite: bool = False, seed: int = 0,
         topk: bool = True, bundles_dir: str | None = None) -> None:
    """
    Generate a small synthetic dataset, train the bundle for a few minutes on CPU, evaluate and run inference, all
    through `python -m monai.bundle run`; print per-class Dice and where the NIfTI outputs are.

    Args:
        dataset: btcv (default), amos or brats.
        workdir: output folder (data, the trained bundle with its weights, logs, segmentations).
        overwrite: replace an existing workdir.
        seed: phantom seed.
        topk: also train the top-k model and run top-k inference (about 2 more minutes).
        bundles_dir: the folder holding the shipped bundles (default: this checkout's or the installed copy).
    """
    run_demo(dataset, workdir, overwrite=overwrite, seed=seed, topk=topk, bundles=bundles_dir)


def cli() -> None:
    """The ``e2enet-demo`` console script."""
    fire.Fire(main)


if __name__ == "__main__":
    cli()
