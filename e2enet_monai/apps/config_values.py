"""Write config values into a bundle's own files, so the bundle alone rebuilds the network its weights came from."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from e2enet_monai.utils.io import atomic_write_bytes

__all__ = ["set_config_values"]


def set_config_values(bundle: str | os.PathLike, values: Mapping[str, object],
                      files: Sequence[str] | None = None) -> dict[str, list[str]]:
    """
    Set the top-level ids ``values`` in the JSON configs ``files`` (names under ``configs/``; default every
    ``*.json`` but ``metadata.json``) that already define them; ids a file does not define are left out of it, so
    each file keeps its own ids. Written atomically.

    This is how a trained bundle stays self-consistent: whatever trains weights with overrides (the demo, MONAI
    Label's set-up) writes the same values into the bundle, and the documented commands then need no overrides.

    Returns:
        ``{file name: [ids set there]}`` for the files that changed.
    """
    configs = Path(bundle) / "configs"
    if files is None:
        files = sorted(p.name for p in configs.glob("*.json") if p.name != "metadata.json")
    names = list(files)
    changed: dict[str, list[str]] = {}
    for name in names:
        path = configs / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {bundle} is not a bundle folder with configs/{name}.")
        config = json.loads(path.read_text())
        keys = [k for k in values if k in config]
        if keys:
            config.update({k: values[k] for k in keys})
            atomic_write_bytes(path, (json.dumps(config, indent=4) + "\n").encode())
            changed[name] = keys
    return changed
