"""Build a bundle's release zip (``<name>_v<version>.zip``, the Model Zoo naming) and the index users download from."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from e2enet_monai.bundle.checks import check_weights_fit_configs
from e2enet_monai.utils.io import atomic_write, atomic_write_bytes, sha256_file

__all__ = ["package_bundle", "update_index"]

# never shipped: evaluation outputs, caches, MONAI Label's per-run config
EXCLUDED_DIRS = {"eval", "__pycache__", ".ipynb_checkpoints"}
EXCLUDED_FILES = {"configs/monailabel_train.json"}
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip timestamps: same inputs give the same bytes


def _bundle_files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or EXCLUDED_DIRS & set(rel.parts[:-1]) or rel.as_posix() in EXCLUDED_FILES:
            continue
        if path.suffix in (".pyc", ".pyo") or rel.name.startswith("."):
            continue
        files.append(path)
    return files


def _large_files_yml(name: str, version: str, weights: list[tuple[str, str]], base_url: str) -> bytes:
    """``large_files.yml`` listing every weight file with its URL next to the zip and its sha256."""
    lines = ["large_files:"]
    for rel, digest in weights:
        url = f"{base_url.rstrip('/')}/{name}_v{version}/{rel}" if base_url else ""
        lines += [f'  - path: "{rel}"', f'    url: "{url}"', f'    hash_val: "{digest}"', '    hash_type: "sha256"']
    if not weights:
        lines = ["large_files: []"]
    return ("\n".join(lines) + "\n").encode()


def package_bundle(bundle: str | os.PathLike, out_dir: str | os.PathLike, base_url: str = "",
                   index: str | os.PathLike | None = None, require_weights: bool = True) -> dict:
    """
    Zip ``bundle`` into ``<out_dir>/<name>_v<version>.zip`` with the bundle folder at the top (what
    ``monai.bundle download --url`` extracts), deterministically: sorted entries, fixed timestamps and permissions.
    The zip's ``large_files.yml`` lists each ``models/*`` file with a sha256 and a URL under ``base_url``; those files
    are also copied to ``<out_dir>/<name>_v<version>/models/`` so one static folder can serve everything.

    Args:
        bundle: bundle folder; its name is the bundle name, ``configs/metadata.json`` gives the version.
        out_dir: where the zip (and the weight copies) go; an existing zip of the same version is an error.
        base_url: URL ``out_dir`` will be served from (for ``large_files.yml`` and the index entry's ``url``).
        index: index JSON to create or update with this entry (see :func:`update_index`).
        require_weights: refuse a bundle without ``models/model.pt`` (a release is useless without weights).

    Raises:
        InputError: when a weights file does not fit the network its configs build (see
            :func:`check_weights_fit_configs`): the package would fail for every user.

    Returns:
        the index entry: ``name``, ``version``, ``url``, ``sha256``, ``size``, ``monai_version``.
    """
    root = Path(bundle).resolve()
    meta_file = root / "configs/metadata.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: {root} is not a bundle folder.")
    meta = json.loads(meta_file.read_text())
    for key in ("version", "monai_version"):
        if key not in meta:
            raise ValueError(f"{meta_file} has no {key!r}.")
    name, version = root.name, meta["version"]
    if require_weights and not (root / "models/model.pt").is_file():
        raise FileNotFoundError(f"{root / 'models/model.pt'} not found: train the bundle first (or pass "
                                f"require_weights=False for a weightless package).")
    check_weights_fit_configs(root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}_v{version}.zip"
    if target.exists():
        raise FileExistsError(f"{target} exists: bump the version in {meta_file} (and its changelog) for a new "
                              f"release.")

    files = _bundle_files(root)
    weights = [(f.relative_to(root).as_posix(), sha256_file(f)) for f in files
               if f.relative_to(root).parts[0] == "models"]

    def write_zip(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in files:
                rel = path.relative_to(root).as_posix()
                info = zipfile.ZipInfo(f"{name}/{rel}", date_time=FIXED_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                if rel == "large_files.yml":
                    data = _large_files_yml(name, version, weights, base_url)
                else:
                    data = path.read_bytes()
                zf.writestr(info, data, compresslevel=6)

    atomic_write(target, write_zip)
    for rel, _ in weights:  # the large files, served next to the zip
        atomic_write_bytes(out / f"{name}_v{version}" / rel, (root / rel).read_bytes())
    entry = {
        "name": name,
        "version": version,
        "url": f"{base_url.rstrip('/')}/{target.name}" if base_url else target.name,
        "sha256": sha256_file(target),
        "size": target.stat().st_size,
        "monai_version": meta["monai_version"],
    }
    if index is not None:
        update_index(index, entry)
    return entry


def update_index(index: str | os.PathLike, entry: dict) -> dict:
    """
    Add ``entry`` to the index JSON ``{"bundles": [entry, ...]}`` (created if missing), replacing an entry with the
    same name and version; written atomically. Returns the new index.
    """
    path = Path(index)
    data = json.loads(path.read_text()) if path.is_file() else {"bundles": []}
    if not isinstance(data.get("bundles"), list):
        raise ValueError(f"{path} is not a bundle index (expected a top-level 'bundles' list).")
    release = (entry["name"], entry["version"])
    data["bundles"] = [e for e in data["bundles"] if (e.get("name"), e.get("version")) != release]
    data["bundles"].append(entry)
    data["bundles"].sort(key=lambda e: (e["name"], [int(p) for p in str(e["version"]).split(".") if p.isdigit()]))
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
    return data
