"""Run bundle workflows through the real ``python -m monai.bundle run`` CLI, and read their results."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["bundle_command", "read_dice_table", "run_bundle"]

def bundle_command(bundle: str | os.PathLike, configs: Sequence[str], overrides: Mapping[str, object] | None = None,
                   launcher: Sequence[str] | None = None) -> list[str]:
    """The ``python -m monai.bundle run`` command line for ``configs`` (file names under ``configs/``)."""
    b = Path(bundle)
    files = [str(b / "configs" / c) for c in configs]
    cmd = [*(launcher or [sys.executable]), "-m", "monai.bundle", "run",
           "--config_file", files[0] if len(files) == 1 else json.dumps(files),
           "--meta_file", str(b / "configs/metadata.json"),
           "--logging_file", str(b / "configs/logging.conf"),
           "--bundle_root", str(b)]
    for key, value in (overrides or {}).items():
        # Python literals: fire reads `False` as a bool but `false` as a (truthy) string
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value) if isinstance(value, bool)
                else json.dumps(value)]
    return cmd


def run_bundle(bundle: str | os.PathLike, configs: Sequence[str], overrides: Mapping[str, object] | None = None,
               launcher: Sequence[str] | None = None, log_file: str | os.PathLike | None = None,
               timeout: float | None = None, check: bool = True,
               run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> subprocess.CompletedProcess:
    """
    Run a bundle workflow in a subprocess; raise with the output's tail if it fails (``check``). With ``log_file``
    the command line and then its output (stdout and stderr together) are written there as it runs, so the file can
    be followed live, and the returned process has no captured output; otherwise both are captured. ``run`` starts
    the process, called as ``subprocess.run`` (the tests pass their warm interpreter's).
    """
    cmd = bundle_command(bundle, configs, overrides, launcher)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if log_file is None:
        proc = run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    else:
        with open(log_file, "w") as log:
            log.write(" ".join(cmd) + "\n\n")
            log.flush()
            proc = run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:  # the log is read back only to report a failure
        if log_file is None:
            where, tail = "", proc.stderr
        else:
            where, tail = f"\n(full log: {log_file})", Path(log_file).read_text()
        raise RuntimeError(f"bundle run failed ({proc.returncode}): {' '.join(cmd)}{where}\n{tail[-4000:]}")
    return proc


def read_dice_table(metrics_dir: str | os.PathLike, channel_names: Mapping[str, str],
                    metric: str = "val_mean_dice", skip_background: bool = True) -> dict[str, float]:
    """
    Per-class mean Dice from MetricsSaver's ``<metric>_raw.csv`` (one row per case, one column per class),
    named by the bundle's ``channel_def``. Classes absent from a case (NaN) are left out of its mean.
    """
    path = Path(metrics_dir) / f"{metric}_raw.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run evaluate.json with MetricsSaver first.")
    with open(path) as f:
        rows = list(csv.reader(f))
    # columns: filename, one per class (named by NamedMetricsSaver), mean
    header, data = rows[0][1:-1], [r[1:-1] for r in rows[1:] if r]
    names = [v for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0]))]
    if skip_background and len(names) == len(header) + 1:
        names = names[1:]
    table = {}
    for j, col in enumerate(header):
        values = [float(r[j]) for r in data if r[j] not in ("nan", "")]
        table[names[j] if j < len(names) else col] = sum(values) / len(values) if values else float("nan")
    return table
