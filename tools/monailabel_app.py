"""Serve this project's bundles with a real MONAI Label server (monaibundle app), offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fire

from e2enet_monai.apps.monailabel.server import ensure_monailabel_venv, server_command, setup_app
from e2enet_monai.utils.cli import as_list
from e2enet_monai.utils.errors import InputError, cli_entry


def install(venv: str = "") -> None:
    """Create (or reuse) MONAI Label's own environment; default ~/.cache/e2enet-monai/monailabel-venv."""
    print(ensure_monailabel_venv(venv or None))


def _as_dict(values: str | dict) -> dict | None:
    """``--values``: a JSON object as text, or the dict fire makes of ``--values '{"epoch_length": 20}'``."""
    if isinstance(values, dict) or not values:
        return values or None
    try:
        parsed = json.loads(values)
    except json.JSONDecodeError as e:
        raise InputError(f"--values {values!r} is not a JSON object ({e}); e.g. --values '{{\"epoch_length\": 20}}'.")
    if not isinstance(parsed, dict):
        raise InputError(f"--values must be a JSON object of config ids, got {values!r}.")
    return parsed


@cli_entry
def setup(app_dir: str, bundles: str, venv: str = "", values: str | dict = "", overwrite: bool = False) -> None:
    """
    Build APP_DIR from MONAI Label's monaibundle app with BUNDLES (comma-separated bundle folders, each with
    models/model.pt) at APP_DIR/model/<name>. VALUES: config ids to set in the copies, e.g.
    '{"epoch_length": 20}' (the server cannot pass overrides). A bundle whose weights do not fit the network its
    configs build is refused, naming the mismatch.
    """
    app = setup_app(app_dir, [str(b) for b in as_list(bundles)], venv or None, _as_dict(values), overwrite)
    print(app)


def start(app_dir: str, studies: str, port: int = 8000, host: str = "127.0.0.1", venv: str = "") -> None:
    """Start the server on APP_DIR with every bundle under APP_DIR/model, images (and labels) from STUDIES."""
    models = sorted(p.name for p in (Path(app_dir) / "model").iterdir() if p.is_dir())
    cmd, env = server_command(app_dir, studies, models, port, venv or None, host)
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    fire.Fire({"install": install, "setup": setup, "start": start})
