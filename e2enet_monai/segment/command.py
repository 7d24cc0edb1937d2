"""
``e2enet-segment``: segment scans with a bundle in one command. Each case runs the bundle's own inference configs
through MONAI's bundle workflow API (``monai.bundle.ConfigWorkflow``), so there is one inference pipeline; this
module only finds the cases, shards them across ranks, stages each case's outputs and moves them into place whole,
and writes the summary.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from e2enet_monai.bundle.checks import output_path
from e2enet_monai.bundle.distributed import shutdown_distributed
from e2enet_monai.data.checks import check_image
from e2enet_monai.inferers.runtime import BACKENDS
from e2enet_monai.segment.dicom_seg import check_dicom_seg_source, write_dicom_seg
from e2enet_monai.segment.inputs import Case, find_cases
from e2enet_monai.segment.outputs import (
    COLOURS,
    label_names,
    label_statistics,
    select_structures,
    structure_ids,
    write_masks,
    write_preview,
    write_statistics,
)
from e2enet_monai.segment.source import BundleSource, resolve_bundle
from e2enet_monai.utils.errors import InputError
from e2enet_monai.utils.io import atomic_write_bytes

__all__ = ["CaseResult", "Options", "build_parser", "cli", "main", "segment", "segment_case"]

SUMMARY_FIELDS = ("case", "seconds", "status", "error", "read_s", "inference_s", "write_s")
STEPS = ("read", "inference", "write")
OUTPUT_TYPES = ("nifti", "masks", "dicom_seg")


@dataclass
class Options:
    """How to segment each case and what to write (the command line's options)."""

    output_type: str = "nifti"
    statistics: bool = False
    preview: bool = False
    roi_subset: Sequence[str] = ()
    fast: bool = False
    k: int | None = None
    tta: bool = False
    folds: Sequence[int] = ()
    device: str = "auto"
    backend: str = "torch"
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (("output_type", OUTPUT_TYPES), ("device", ("auto", "cpu", "cuda")),
                              ("backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}.")
        if self.k is not None and self.k < 0:
            raise InputError(f"--k {self.k}: the number of refined patches must be 0 or more.")
        if self.k is not None and not self.fast:
            raise InputError(f"--k {self.k} sets the patches that top-k inference refines: add --fast, or drop --k "
                             f"(sliding window has no K).")
        if self.backend != "torch" and (self.fast or self.device == "cuda"):
            raise InputError(f"--backend {self.backend} runs sliding-window inference on CPU: drop --fast and "
                             f"--device cuda, or use --backend torch.")


@dataclass
class CaseResult:
    """One row of ``summary.csv``: ``status`` is ``done``, ``skipped`` (its output existed) or ``failed``."""

    case: str
    seconds: float
    status: str
    error: str = ""
    steps: dict[str, float] = field(default_factory=dict)


def _input_error(error: BaseException) -> InputError | None:
    """The :class:`InputError` behind ``error``: MONAI re-raises what a config expression raises as its cause."""
    seen = error
    while seen is not None:
        if isinstance(seen, InputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _message(error: BaseException) -> str:
    """One line for a user: an :class:`InputError` as it is, anything else with its type."""
    return str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"


def _dicom_to_nifti(case: Case, folder: Path) -> Path:
    """The case's DICOM series read by MONAI's ``PydicomReader`` (its grid and RAS affine), as ``<case>.nii.gz``."""
    from monai.transforms import LoadImage

    series = folder / "dicom"
    series.mkdir()
    for f in case.dicom.files:  # only the chosen series, even if its folder holds others
        os.symlink(f.resolve(), series / f.name)
    try:
        image = LoadImage(reader="PydicomReader", image_only=True)(str(series))
    except Exception as e:
        raise InputError(f"DICOM series {case.dicom.uid} in {case.dicom.files[0].parent} cannot be read "
                         f"({type(e).__name__}: {e}).") from e
    data = np.asarray(image)
    if np.all(np.mod(data, 1) == 0) and data.min() >= -32768 and data.max() <= 32767:
        data = data.astype(np.int16)
    path = folder / f"{case.name}.nii.gz"
    nifti = nib.Nifti1Image(data, np.asarray(image.affine, dtype=np.float64))
    nifti.set_qform(nifti.affine, code=1)
    nifti.set_sform(nifti.affine, code=1)
    nib.save(nifti, str(path))
    shutil.rmtree(series)
    return path


def _run_workflow(source: BundleSource, images: Sequence[Path], out_dir: Path, options: Options) -> Path:
    """The bundle's inference (``inference.json``, with ``inference_topk.json`` for ``fast``) on one case."""
    from monai.bundle import ConfigWorkflow

    image = [str(p) for p in images] if len(images) > 1 else str(images[0])
    overrides: dict[str, object] = {"bundle_root": str(source.folder), "datalist": [image],
                                    "output_dir": str(out_dir), "overwrite": True}
    if options.device != "auto":
        overrides["device"] = f"$torch.device('{'cuda:0' if options.device == 'cuda' else 'cpu'}')"
        overrides["amp"] = options.device == "cuda"
    if options.fast and options.k is not None:
        overrides["topk_k"] = options.k
    if options.tta:
        overrides["tta"] = True
    if options.folds:
        overrides["folds"] = [int(k) for k in options.folds]
    if options.backend != "torch":
        overrides["inference_backend"] = options.backend
    logging_file = source.folder / "configs" / "logging.conf"
    workflow = ConfigWorkflow(config_file=source.configs(options.fast),
                              meta_file=str(source.folder / "configs" / "metadata.json"),
                              logging_file=str(logging_file) if logging_file.is_file() else False,
                              workflow_type="infer", **overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return output_path(image, out_dir)


def _write_outputs(case: Case, images: Sequence[Path], label_file: Path, folder: Path, source: BundleSource,
                   options: Options) -> None:
    """The case's outputs in ``folder``: label map or masks, then statistics and preview as asked."""
    names = label_names(source.metadata)
    seg = nib.load(str(label_file))
    labels = np.asarray(seg.dataobj).astype(np.uint8)
    if options.roi_subset:
        keep = structure_ids(names, options.roi_subset)
        labels = select_structures(labels, keep)
        names = {v: names[v] for v in keep}
    if options.output_type == "masks":
        write_masks(folder / "masks", labels, seg.affine, names)
    elif options.output_type == "dicom_seg":
        write_dicom_seg(folder / f"{case.name}_seg.dcm", labels, seg.affine, case.dicom.files, names,
                        algorithm=str(source.metadata.get("name", source.folder.name)),
                        version=str(source.metadata["version"]), colours=COLOURS)
    else:
        nib.save(nib.Nifti1Image(labels, seg.affine, seg.header), str(folder / f"{case.name}_seg.nii.gz"))
    if options.statistics or options.preview:
        arrays = [np.asarray(nib.load(str(p)).dataobj, dtype=np.float32) for p in images]
        image = arrays[0] if len(arrays) == 1 else np.stack(arrays, axis=-1)
        channel_def = source.metadata["network_data_format"]["inputs"]["image"]["channel_def"]
        if options.statistics:
            channels = [channel_def[str(c)] for c in range(len(channel_def))] if image.ndim == 4 else None
            write_statistics(folder / "statistics.json",
                             label_statistics(labels, image, seg.affine, names, channel_names=channels))
        if options.preview:
            write_preview(folder / "preview.png", image, labels, seg.affine, names, title=case.name)


def _place(staging: Path, target: Path, overwrite: bool) -> None:
    """Move the finished ``staging`` folder to ``target`` in one rename (the old one removed only afterwards)."""
    old = target.with_name(f".{target.name}.old")
    if target.exists():
        if not overwrite:
            raise InputError(f"{target} exists; pass --overwrite to replace it.")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def segment_case(case: Case, source: BundleSource, output: Path, options: Options) -> CaseResult:
    """
    Segment one case into ``output/<case>/``: staged in ``output/.<case>.partial`` and renamed into place when
    complete, so the case folder is there whole or not at all. Raises what goes wrong (the caller records it).
    """
    start = time.perf_counter()
    target = output / case.name
    staging = output / f".{case.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was stopped: never complete
    staging.mkdir(parents=True)
    steps = {}
    try:
        if case.dicom is None:
            images = list(case.images)  # checked by segment() before the first case
        else:
            images = [_dicom_to_nifti(case, staging)]
            check_image(images[0], in_channels=source.in_channels, spacing=source.spacing,
                        patch_size=source.patch_size)
        steps["read"] = time.perf_counter() - start
        t = time.perf_counter()
        try:
            label_file = _run_workflow(source, images, staging / "bundle", options)
        except Exception as e:
            found = _input_error(e)
            if found is not None:
                raise found from None
            raise
        steps["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        result = staging / "case"
        result.mkdir()
        _write_outputs(case, images, label_file, result, source, options)
        steps["write"] = time.perf_counter() - t
        _place(result, target, options.overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CaseResult(case.name, time.perf_counter() - start, "done", steps=steps)


def _write_summary(path: Path, rows: Sequence[CaseResult]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(SUMMARY_FIELDS)
    for r in rows:
        writer.writerow([r.case, f"{r.seconds:.2f}", r.status, r.error,
                         *(f"{r.steps[k]:.2f}" if k in r.steps else "" for k in STEPS)])
    atomic_write_bytes(path, text.getvalue().encode())


def _read_summary(path: Path) -> list[CaseResult]:
    with open(path, newline="") as f:
        return [CaseResult(r["case"], float(r["seconds"]), r["status"], r["error"],
                           {k: float(r[f"{k}_s"]) for k in STEPS if r[f"{k}_s"]}) for r in csv.DictReader(f)]


def _rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks, as ``torchrun`` sets them (1 process without it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def segment(inputs: Sequence[str | os.PathLike], output: str | os.PathLike, bundle: str,
            options: Options | None = None, index_url: str | None = None, cache: str | os.PathLike | None = None,
            series_uid: str | None = None, debug: bool = False) -> list[CaseResult]:
    """
    Segment every case of ``inputs`` (see :func:`~e2enet_monai.segment.inputs.find_cases`) into
    ``output/<case>/`` and write ``output/summary.csv``.

    A case whose folder exists is skipped (status ``skipped``) unless ``options.overwrite``; when the only case
    given exists, that is an error. Under ``torchrun`` the cases still to do are split by rank (case ``i`` on rank
    ``i % world_size``, after every rank has looked at what exists), each rank writes its own cases, and rank 0
    writes the summary of all of them once the others finish. The inputs and options, and every image to segment,
    are checked before the first case starts (DICOM series when they are read).

    Returns:
        this rank's rows (rank 0: all of them).

    Raises:
        InputError: bad inputs or options (before any work), or the failure of a single-case run.
    """
    options = options or Options()
    out = Path(output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file; -o takes a folder.")
    if options.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda, but PyTorch sees no CUDA device here; use --device cpu (or auto).")
    source = resolve_bundle(bundle, fast=options.fast, index_url=index_url, cache=cache, tta=options.tta,
                            folds=options.folds)
    if options.roi_subset:
        structure_ids(label_names(source.metadata), options.roi_subset)
    cases = find_cases(inputs, in_channels=source.in_channels, series_uid=series_uid)
    if options.output_type == "dicom_seg":
        for case in cases:
            if case.dicom is None:
                raise InputError(f"--output_type dicom_seg references the source DICOM series, but {case.images[0]} "
                                 f"is NIfTI; give its DICOM series folder, or use --output_type nifti or masks.")
            check_dicom_seg_source(case.dicom.files)
    if len(cases) == 1 and (out / cases[0].name).exists() and not options.overwrite:
        raise InputError(f"{out / cases[0].name} exists; pass --overwrite to replace it, or -o another folder.")
    rank, world = _rank_and_world()
    dist = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    done = {c.name for c in cases if (out / c.name).is_dir()} if not options.overwrite else set()
    if dist is not None:
        dist.barrier()  # every rank has seen the same finished cases before any rank writes one
    todo = [c for c in cases if c.name not in done]
    mine = todo[rank::world]
    for case in mine:
        if case.dicom is None:
            check_image(list(case.images) if len(case.images) > 1 else case.images[0],
                        in_channels=source.in_channels, spacing=source.spacing, patch_size=source.patch_size)
    out.mkdir(parents=True, exist_ok=True)
    where = f"[rank {rank}] " if world > 1 else ""
    rows = []
    if rank == 0:
        for case in cases:
            if case.name in done:
                shutil.rmtree(out / f".{case.name}.partial", ignore_errors=True)  # stopped before its clean-up
                rows.append(CaseResult(case.name, 0.0, "skipped", "output exists"))
                print(f"{case.name}: skipped, {out / case.name} exists", flush=True)
    # a bar over this rank's cases on stderr (the bundle's own bars cover the patches of each case); closed before
    # an error is printed
    with tqdm(total=len(mine), desc=f"{where}cases", unit="case", file=sys.stderr, disable=len(mine) < 2) as bar:
        for i, case in enumerate(mine, 1):
            print(f"{where}[{i}/{len(mine)}] {case.name} ...", flush=True)
            start = time.perf_counter()
            try:
                row = segment_case(case, source, out, options)
            except Exception as e:
                if debug or len(cases) == 1:
                    raise
                row = CaseResult(case.name, time.perf_counter() - start, "failed", _message(e))
                print(f"{where}[{i}/{len(mine)}] {case.name}: failed: {row.error}", flush=True)
            else:
                steps = ", ".join(f"{k} {v:.1f}" for k, v in row.steps.items())
                print(f"{where}[{i}/{len(mine)}] {case.name}: {row.seconds:.1f} s ({steps}) -> {out / case.name}",
                      flush=True)
            rows.append(row)
            bar.update()
    if dist is None:
        _write_summary(out / "summary.csv", _in_order(rows, cases))
        return rows
    _write_summary(out / f".summary.rank{rank}.csv", rows)
    dist.barrier()
    if rank == 0:
        parts = [out / f".summary.rank{w}.csv" for w in range(world)]
        rows = _in_order([r for part in parts for r in _read_summary(part)], cases)
        _write_summary(out / "summary.csv", rows)
        for part in parts:
            part.unlink()
    shutdown_distributed()
    return rows


def _in_order(rows: Sequence[CaseResult], cases: Sequence[Case]) -> list[CaseResult]:
    by_name = {r.case: r for r in rows}
    return [by_name[c.name] for c in cases if c.name in by_name]


def build_parser() -> argparse.ArgumentParser:
    """The ``e2enet-segment`` command line (argparse, not fire: ``--roi_subset a b`` takes several values)."""
    p = argparse.ArgumentParser(
        prog="e2enet-segment",
        description="Segment CT or MR scans with an e2enet-monai bundle: NIfTI files, folders of them or a DICOM "
                    "series in; label maps (or masks), statistics and previews out, one folder per case.")
    p.add_argument("-i", "--input", nargs="+", required=True,
                   help="a NIfTI file, a folder of NIfTI files, a DICOM series folder; for BraTS also the 4 "
                        "files of one case (T1c, T1, T2, FLAIR) or a folder of case folders")
    p.add_argument("-o", "--output", required=True, help="output folder: <output>/<case>/ per case, summary.csv")
    p.add_argument("--bundle", required=True, help="btcv, amos, brats (a downloaded copy) or a bundle folder")
    p.add_argument("--fast", action="store_true", help="top-k patch inference (inference_topk.json)")
    p.add_argument("--k", type=int, default=None, help="patches refined with --fast (default: the bundle's)")
    p.add_argument("--tta", action="store_true",
                   help="mirror test-time augmentation: probabilities averaged over the 8 flips of the three axes")
    p.add_argument("--folds", nargs="+", type=int, default=(), metavar="K",
                   help="ensemble of fold checkpoints (models/model_fold<K>.pt; model_topk_fold<K>.pt with --fast), "
                        "probabilities averaged")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="run the network in torch, or exported to ONNX in ONNX Runtime or OpenVINO (CPU, sliding "
                        "window; pip install e2enet-monai[runtimes])")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: its own)")
    p.add_argument("--statistics", action="store_true",
                   help="statistics.json: per structure voxels, volume (ml), mean and std intensity")
    p.add_argument("--preview", action="store_true", help="preview.png: mid-slices with the labels overlaid")
    p.add_argument("--roi_subset", nargs="+", default=(), metavar="NAME", help="keep only these structures")
    p.add_argument("--output_type", default="nifti", choices=OUTPUT_TYPES,
                   help="nifti: one label map; masks: one 0/1 NIfTI per structure; dicom_seg: one DICOM-SEG "
                        "referencing the source series (DICOM input only)")
    p.add_argument("--overwrite", action="store_true", help="replace existing case outputs")
    p.add_argument("--series_uid", default=None, help="the DICOM series to use when a folder holds several")
    p.add_argument("--index_url", default=None, help="bundle index to download a named bundle from")
    p.add_argument("--cache", default=None, help="downloaded bundles (default ~/.cache/e2enet-monai/bundles)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (1: an error, or a case that failed)."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        options = Options(output_type=args.output_type, statistics=args.statistics, preview=args.preview,
                          roi_subset=tuple(args.roi_subset), fast=args.fast, k=args.k, tta=args.tta,
                          folds=tuple(args.folds), device=args.device, backend=args.backend,
                          overwrite=args.overwrite)
        rows = segment(args.input, args.output, args.bundle, options, index_url=args.index_url, cache=args.cache,
                       series_uid=args.series_uid, debug=args.debug)
    except Exception as e:  # one clear line last (with --debug, after the traceback)
        if args.debug:
            traceback.print_exc()
        print(f"error: {_message(e)}", file=sys.stderr)
        return 1
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        print(f"error: {len(failed)} of {len(rows)} case(s) failed: "
              + "; ".join(f"{r.case}: {r.error}" for r in failed), file=sys.stderr)
        return 1
    return 0


def cli() -> None:
    """Console-script entry point (``e2enet-segment``)."""
    sys.exit(main())
