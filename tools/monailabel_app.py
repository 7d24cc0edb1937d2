"""Serve this project's bundles with a real MONAI Label server (monaibundle app), offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fire

from e2enet_monai.bundle.label_app import ensure_monailabel_venv, server_command, setup_app


def _as_list(value) -> list[str]:
    return [v for v in value.split(",") if v] if isinstance(value, str) else [str(v) for v in value]


def install(venv: str = "") -> None:
    """Create (or reuse) MONAI Label's own environment; default ~/.cache/e2enet-monai/monailabel-venv."""
    print(ensure_monailabel_venv(venv or None))


def setup(app_dir: str, bundles: str, venv: str = "", values: str = "", overwrite: bool = False) -> None:
    """
    Build APP_DIR from MONAI Label's monaibundle app with BUNDLES (comma-separated bundle folders, each with
    models/model.pt) at APP_DIR/model/<name>. VALUES: JSON of config ids to set in the copies, e.g.
    '{"epoch_length": 20}' (the server cannot pass overrides).
    """
    app = setup_app(app_dir, _as_list(bundles), venv or None, json.loads(values) if values else None, overwrite)
    print(app)


def start(app_dir: str, studies: str, port: int = 8000, host: str = "127.0.0.1", venv: str = "") -> None:
    """Start the server on APP_DIR with every bundle under APP_DIR/model, images (and labels) from STUDIES."""
    models = sorted(p.name for p in (Path(app_dir) / "model").iterdir() if p.is_dir())
    cmd, env = server_command(app_dir, studies, models, port, venv or None, host)
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    fire.Fire({"install": install, "setup": setup, "start": start})
