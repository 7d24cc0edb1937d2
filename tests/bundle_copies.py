"""Bundle copies for tests: a shipped bundle with the CPU demo network in its configs and seeded random weights."""

import shutil
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from e2enet_monai.apps.config_values import set_config_values
from e2enet_monai.apps.demo import CPU_DEMO_OVERRIDES

NET = {k: CPU_DEMO_OVERRIDES[k] for k in ("channels", "strides", "patch_size")}


def random_weights_copy(source: Path, folder: Path, configs=("inference.json",), seed: int = 0) -> Path:
    """``source`` copied into ``folder`` (no models, no eval), :data:`NET` written into ``configs`` and
    ``models/model.pt`` holding the network of ``inference.json`` with weights seeded by ``seed`` (no training)."""
    bundle = folder / source.name
    shutil.copytree(source, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    set_config_values(bundle, NET, list(configs))
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/inference.json"))
    torch.manual_seed(seed)
    (bundle / "models").mkdir()
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model.pt")
    return bundle


def btcv_case(root: Path) -> tuple[Path, Path]:
    """A BTCV random-weights copy (both inference configs with the CPU demo network) and one 96 x 96 x 32 phantom CT
    to infer on, under ``root``."""
    from e2enet_monai.bundle.registry import bundle_path
    from e2enet_monai.data import write_synthetic

    bundle = random_weights_copy(bundle_path("btcv"), root, configs=("inference.json", "inference_topk.json"))
    raw = write_synthetic("btcv", root / "raw", num_train=0, num_test=1, shape=(96, 96, 32))
    return bundle, sorted((raw / "RawData/Testing/img").glob("*.nii.gz"))[0]
