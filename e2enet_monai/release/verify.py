"""Model Zoo checks for a bundle folder, run through MONAI's own ``monai.bundle`` entry points."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

from e2enet_monai.bundle.registry import SHIPPED_BUNDLES
from e2enet_monai.data import prepare_dataset, write_synthetic

__all__ = ["OUR_SCHEMA", "REQUIRED_FILES", "check_changelog", "check_export", "check_layout", "check_metadata",
           "check_net_in_out", "check_properties", "verify_bundle"]

OUR_SCHEMA = Path(__file__).with_name("metadata_schema.json")
REQUIRED_FILES = (
    "LICENSE", "large_files.yml", "configs/metadata.json", "configs/inference.json", "configs/train.json",
    "configs/evaluate.json", "configs/multi_gpu_train.json", "configs/multi_gpu_evaluate.json", "configs/logging.conf",
    "configs/inference_topk.json", "configs/train_topk.json", "configs/train_global.json",
    "docs/README.md", "docs/data_license.txt",
)
# the smallest phantom set each raw layout splits into 5 folds (write_synthetic keyword arguments)
PROPERTY_PHANTOMS = {
    "btcv": {"num_train": 5, "num_test": 1},
    "amos": {"num_train": 5, "num_val": 0, "num_test": 1},
    "brats2021": {"num_cases": 5},
}


def check_layout(bundle: str | os.PathLike) -> None:
    """Every file the Model Zoo and MONAI Label expect is there."""
    missing = [f for f in REQUIRED_FILES if not (Path(bundle) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {bundle} lacks {missing}.")


def check_metadata(bundle: str | os.PathLike, schema: str | os.PathLike = OUR_SCHEMA) -> None:
    """``monai.bundle.verify_metadata`` against a local schema file (no download when the file exists)."""
    if not Path(schema).is_file():
        raise FileNotFoundError(f"schema file {schema} does not exist.")
    verify_metadata(meta_file=str(Path(bundle) / "configs/metadata.json"), filepath=str(schema))


def check_changelog(bundle: str | os.PathLike) -> None:
    """The version has a changelog entry (the Model Zoo CI's version check)."""
    meta = json.loads((Path(bundle) / "configs/metadata.json").read_text())
    if meta["version"] not in meta.get("changelog", {}):
        raise ValueError(f"{bundle}: version {meta['version']} has no changelog entry.")


def check_net_in_out(bundle: str | os.PathLike, n: int | None = None) -> None:
    """``monai.bundle.verify_net_in_out`` on ``network_def``, by default with MONAI's (and the Model Zoo CI's) ``n=1``:
    the metadata's ``64*n`` spatial shape gives E2ENet at least 2 bottleneck voxels per axis."""
    b = Path(bundle)
    verify_net_in_out(net_id="network_def", meta_file=str(b / "configs/metadata.json"),
                      config_file=str(b / "configs/inference.json"), n=n, device="cpu", bundle_root=str(b))


def check_export(bundle: str | os.PathLike, ckpt_file: str | os.PathLike | None = None) -> int:
    """
    ``monai.bundle ckpt_export`` (TorchScript via ``torch.jit.script``) of ``ckpt_file`` (default the bundle's
    ``models/model.pt``; freshly initialised weights when the bundle has none), then reload the ``.ts`` and compare
    its output with the eager network's, both in float64 on a seeded input. The export goes to a temporary folder,
    removed afterwards (about 190 MB for the paper network). Returns the exported file's size in bytes.
    """
    with tempfile.TemporaryDirectory(prefix="ckpt_export_") as tmp:
        return _export_and_compare(Path(bundle), ckpt_file, Path(tmp))


def _export_and_compare(b: Path, ckpt_file: str | os.PathLike | None, out_dir: Path) -> int:
    """:func:`check_export` into ``out_dir``."""
    parser = ConfigParser()
    parser.read_config(str(b / "configs/inference.json"))
    parser["bundle_root"] = str(b)
    if ckpt_file is None:
        ckpt_file = b / "models/model.pt"
        if not ckpt_file.is_file():
            ckpt_file = out_dir / "init.pt"
            torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, ckpt_file)
    ts_path = out_dir / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(ts_path), ckpt_file=str(ckpt_file), key_in_ckpt="model",
                meta_file=str(b / "configs/metadata.json"), config_file=str(b / "configs/inference.json"),
                bundle_root=str(b))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt_file, map_location="cpu", weights_only=True)["model"])
    net.eval()
    scripted = torch.jit.load(str(ts_path)).eval()
    channels = json.loads((b / "configs/metadata.json").read_text())["network_data_format"]["inputs"]["image"]
    # the scripted graph is the same at any input size: the smallest E2ENet accepts with two voxels at its coarsest
    # level (32 x 32 x 64 for the paper network, a quarter of the metadata's 64^3), else the metadata's 64^3 at n=1
    divisor = getattr(net, "divisor", None)
    spatial = (*divisor[:-1], 2 * divisor[-1]) if divisor is not None else (64, 64, 64)
    # compared in float64: the scripted graph runs the plain-op path and eager the fast path (other summation
    # orders), so in float32 the two differ by rounding alone, up to ~3e-5 of the output's scale for the paper network
    # (and a fixed absolute tolerance failed at random); in float64 they agree to ~1e-13, and a wrong export is O(1) off
    net.double()
    scripted.double()
    seeded = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels["num_channels"], *spatial, dtype=torch.float64, generator=seeded)
    with torch.no_grad():
        expected, got = net(x), scripted(x)
    tolerance = 1e-7
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=tolerance, atol=tolerance):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise AssertionError(f"{b}: the TorchScript export does not reproduce the network's output in float64: output "
                             f"shape {tuple(got.shape)} vs {tuple(expected.shape)}, largest difference {diff:.3g} "
                             f"(tolerance {tolerance:g}).")
    return ts_path.stat().st_size


def check_properties(bundle: str | os.PathLike) -> None:
    """
    ``ConfigWorkflow(...).initialize()`` then ``check_properties()`` for the train workflows (sliding window and
    top-k) on a tiny phantom dataset in the bundle's raw layout (as the Model Zoo's unit tests do), and for the
    inference workflows with no data at all (as the Model Zoo's CI does): no required id missing.
    """
    b = Path(bundle)
    kinds = {info.folder: info.dataset for info in SHIPPED_BUNDLES.values()}
    if b.name not in kinds:
        raise ValueError(f"no phantom layout is known for bundle {b.name}; expected one of {sorted(kinds)}.")
    kind = kinds[b.name]
    with tempfile.TemporaryDirectory(prefix="props_") as scratch:
        data, out = Path(scratch) / "data", Path(scratch) / "out"
        write_synthetic(kind, data, shape=(32, 32, 16), **PROPERTY_PHANTOMS[kind])
        prepare_dataset(kind, data, data / "datalist.json")
        train = {"num_workers": 0, "ckpt_dir": str(out / "models")}
        runs = (("train", ["train.json"], train),
                ("inference", ["inference.json"], {"load_pretrain": False, "dataset_dir": "/nonexistent"}),
                ("train", ["train.json", "train_topk.json"], train),
                ("train", ["train.json", "train_topk.json", "train_global.json"], train),
                ("inference", ["inference.json", "inference_topk.json"], {"load_pretrain": False,
                                                                         "dataset_dir": "/nonexistent"}))
        for workflow, configs, extra in runs:
            # outputs (the TensorBoard writers, checkpoints) into the scratch folder: the bundle being verified,
            # perhaps an installed copy, is left as it was
            wf = ConfigWorkflow(config_file=[str(b / "configs" / c) for c in configs],
                                meta_file=str(b / "configs/metadata.json"),
                                workflow_type=workflow, logging_file=str(b / "configs/logging.conf"),
                                bundle_root=str(b), **{"dataset_dir": str(data), "output_dir": str(out), **extra})
            wf.initialize()
            missing = wf.check_properties()
            if missing:
                raise ValueError(f"{bundle}: {workflow} workflow of {configs} lacks required properties {missing}.")
            wf.finalize()


CHECKS: dict[str, Callable] = {
    "layout": check_layout,
    "changelog": check_changelog,
    "metadata": check_metadata,
    "net_in_out": check_net_in_out,
    "export": check_export,
    "properties": check_properties,
}


def verify_bundle(bundle: str | os.PathLike, schemas: list[str | os.PathLike] | None = None) -> dict[str, str]:
    """Run every check; return ``{check: "ok" | "FAILED: <reason>"}``. ``schemas`` adds schema files to ours."""
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        targets = [None] if name != "metadata" else [OUR_SCHEMA, *(schemas or [])]
        for schema in targets:
            label = name if schema is None else f"metadata ({Path(schema).name})"
            try:
                check(bundle) if schema is None else check(bundle, schema)
                results[label] = "ok"
            except Exception as e:  # reported, the tool's exit code says whether all passed
                results[label] = f"FAILED: {type(e).__name__}: {e}"
    return results
