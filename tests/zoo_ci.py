"""
The Model Zoo's CI checks of a bundle (``ci/verify_bundle.py`` in Project-MONAI/model-zoo, ``full`` mode), written
again by us from its behaviour, with its default arguments: no ``n`` for ``verify_net_in_out`` (so ``n=1``), the
inference workflow created from the bundle's defaults with no data, and its weights produced as its GPU CI does
(a bare ``state_dict`` of ``network_def`` at ``models/model.pt``). Two differences, because no network is reached
here: the zoo downloads ``large_files.yml`` first (our release tests check that download against a loopback
server) and the metadata schema named in ``metadata.json`` (we pass the official files beside the checkout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser, ckpt_export, create_workflow, verify_metadata, verify_net_in_out

NECESSARY_FILES = ("configs/metadata.json", "LICENSE")
PREFERRED_FILES = ("models/model.pt", "configs/inference.json")


def produce_fake_weights(bundle: Path) -> None:
    """What the zoo's GPU CI does for bundles without downloadable weights."""
    parser = ConfigParser()
    parser.read_config(f=str(bundle / "configs/inference.json"))
    parser.read_meta(f=str(bundle / "configs/metadata.json"))
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models/model.pt")


def verify_directory(bundle: Path) -> None:
    for file in (*NECESSARY_FILES, *PREFERRED_FILES):
        if not (bundle / file).exists():
            raise ValueError(f"necessary file {file} is not existing.")


def verify_version_changes(bundle: Path, model_info: dict) -> None:
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    for key in ("version", "changelog"):
        if key not in meta:
            raise ValueError(f"'{key}' is missing in configs/metadata.json of bundle: {bundle.name}.")
    if meta["version"] not in meta["changelog"]:
        raise ValueError(f"version number: {meta['version']} is missing in 'changelog'.")
    if f"{bundle.name}_v{meta['version']}" in model_info:
        raise ValueError(f"version number: {meta['version']} is already used of bundle: {bundle.name}.")


def verify_properties(bundle: Path) -> None:
    """``create_workflow`` (which runs ``initialize``) for ``inference`` with the bundle's defaults, then
    ``check_properties()``: MONAI's required inference properties must all be there."""
    workflow = create_workflow(workflow_type="inference", bundle_root=str(bundle),
                               config_file=str(bundle / "configs/inference.json"),
                               logging_file=str(bundle / "configs/logging.conf"),
                               meta_file=str(bundle / "configs/metadata.json"))
    missing = workflow.check_properties()
    if missing:
        raise ValueError(f"check properties for workflow failed: {missing}")


def verify(bundle: Path, schema: Path, model_info: dict | None = None) -> list[str]:
    """All checks in the zoo's order; returns the names of those that ran (each raises on failure)."""
    done = []
    verify_directory(bundle)
    done.append("directory")
    verify_version_changes(bundle, model_info or {})
    done.append("version")
    verify_metadata(meta_file=str(bundle / "configs/metadata.json"), filepath=str(schema))
    done.append("metadata")
    verify_properties(bundle)
    done.append("properties")
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs/metadata.json"),
                      config_file=os.path.join(str(bundle), "configs/inference.json"), bundle_root=str(bundle))
    done.append("data shape")
    ckpt_export(net_id="network_def", filepath=str(bundle / "models/verify_model.ts"),
                ckpt_file=str(bundle / "models/model.pt"), meta_file=str(bundle / "configs/metadata.json"),
                config_file=str(bundle / "configs/inference.json"), bundle_root=str(bundle))
    done.append("torchscript")
    return done
