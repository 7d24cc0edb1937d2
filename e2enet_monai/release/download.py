"""
Download a released bundle through an index JSON, checking its sha256 before anything is extracted.

MONAI's ``monai.bundle download`` does not check zip hashes, so a corrupted or tampered zip would be extracted as
is; this one verifies size and sha256, rejects unsafe archive entries and extracts atomically (the bundle folder
appears complete or not at all).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

import monai

__all__ = ["BundleDownloadError", "download", "resolve"]

logger = logging.getLogger(__name__)


class BundleDownloadError(RuntimeError):
    """A bundle could not be resolved, fetched, verified or extracted; nothing was left in the bundle folder."""


def _version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in str(version).split("+")[0].split("."))
    except ValueError:
        return (-1,)


def _fetch(url: str, timeout: float) -> urllib.request.addinfourl:
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s)/file URLs chosen by the user)
    except (urllib.error.URLError, OSError) as err:
        raise BundleDownloadError(f"cannot fetch {url}: {err}") from err


def resolve(name: str, version: str | None, index_url: str, timeout: float = 60.0) -> dict:
    """The index entry of ``name`` at ``version`` (default: the highest version listed)."""
    with _fetch(index_url, timeout) as response:
        try:
            index = json.loads(response.read().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BundleDownloadError(f"{index_url} is not a JSON bundle index: {err}") from err
    entries = [e for e in index.get("bundles", []) if isinstance(e, dict) and e.get("name") == name]
    if not entries:
        names = sorted({e.get("name") for e in index.get("bundles", []) if isinstance(e, dict)})
        raise BundleDownloadError(f"bundle {name!r} is not in {index_url}; it lists {names}.")
    if version is None:
        return max(entries, key=lambda e: _version_key(e.get("version", "")))
    for entry in entries:
        if str(entry.get("version")) == str(version):
            return entry
    raise BundleDownloadError(f"bundle {name!r} has no version {version!r} in {index_url}; available: "
                              f"{sorted((e.get('version') for e in entries), key=_version_key)}.")


def _check_members(archive: zipfile.ZipFile, name: str) -> None:
    """Every entry must be a relative path inside ``<name>/`` (no absolute paths, no ``..``, no links)."""
    for info in archive.infolist():
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise BundleDownloadError(f"refusing unsafe archive entry {info.filename!r} (absolute path or '..').")
        if not path.parts or path.parts[0] != name:
            raise BundleDownloadError(f"archive entry {info.filename!r} is outside the bundle folder {name + '/'!r}.")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            raise BundleDownloadError(f"refusing symbolic link {info.filename!r} in the archive.")


def download(name: str, version: str | None = None, index_url: str = "", bundle_dir: str | os.PathLike = "bundles",
             overwrite: bool = False, timeout: float = 60.0) -> Path:
    """
    Resolve ``name`` (and ``version``, default the latest) in the index at ``index_url``, download its zip, verify
    size and sha256, and extract it to ``<bundle_dir>/<name>``.

    Raises :class:`BundleDownloadError` (clear message, nothing left behind) for an unknown name or version, a
    failed or truncated download, a hash mismatch, or an archive with absolute/``..``/link entries; FileExistsError
    when the bundle folder exists and ``overwrite`` is False. Warns when the bundle was built with a newer MONAI.

    Returns:
        the bundle folder.
    """
    if not index_url:
        raise ValueError("index_url is required: the URL (or file:// path) of the bundle index JSON.")
    entry = resolve(name, version, index_url, timeout)
    for key in ("url", "sha256", "version"):
        if key not in entry:
            raise BundleDownloadError(f"index entry of {name!r} in {index_url} lacks {key!r}: {entry}.")
    dest_root = Path(bundle_dir).resolve()
    target = dest_root / name
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite True) to replace it.")
    needed = entry.get("monai_version")
    if needed and _version_key(needed) > _version_key(monai.__version__):
        logger.warning("bundle %s %s was built with MONAI %s, newer than the installed %s: upgrade MONAI if it fails.",
                       name, entry["version"], needed, monai.__version__)
    url = urllib.parse.urljoin(index_url, entry["url"])
    dest_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_root, prefix=f".{name}.download.") as tmp:
        archive_path = Path(tmp) / f"{name}_v{entry['version']}.zip"
        digest, size = hashlib.sha256(), 0
        with _fetch(url, timeout) as response, open(archive_path, "wb") as f:
            try:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
                    f.write(block)
            except (OSError, http.client.HTTPException) as err:  # e.g. IncompleteRead: connection cut
                raise BundleDownloadError(f"download of {url} broke off after {size} bytes: {err}") from err
        if "size" in entry and size != int(entry["size"]):
            raise BundleDownloadError(f"download of {url} is incomplete or wrong: {size} bytes, the index says "
                                      f"{entry['size']}; nothing was extracted.")
        if digest.hexdigest() != str(entry["sha256"]).lower():
            raise BundleDownloadError(f"sha256 mismatch for {url}: got {digest.hexdigest()}, the index says "
                                      f"{entry['sha256']}; the file is corrupted or was tampered with, nothing was "
                                      f"extracted.")
        try:
            with zipfile.ZipFile(archive_path) as archive:
                _check_members(archive, name)
                staging = Path(tmp) / "extract"
                archive.extractall(staging)
        except zipfile.BadZipFile as err:
            raise BundleDownloadError(f"{url} is not a valid zip archive: {err}") from err
        if not (staging / name / "configs/metadata.json").is_file():
            raise BundleDownloadError(f"{url} holds no {name}/configs/metadata.json: not a bundle archive.")
        old = None
        if target.exists():  # overwrite: move the old folder aside, put the new one in place, then delete the old
            old = Path(tmp) / "previous"
            os.replace(target, old)
        try:
            os.replace(staging / name, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("downloaded %s %s to %s (sha256 verified)", name, entry["version"], target)
    return target
