"""Release zips and downloads, served by a real HTTP server on 127.0.0.1 (no internet)."""

import hashlib
import json
import logging
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import warm
import yaml

from e2enet_monai.bundle.registry import bundles_dir
from e2enet_monai.release import BundleDownloadError, download, package_bundle, update_index

NAME = "e2enet_btcv_segmentation"


def make_bundle(root: Path, version: str = "0.2.0", monai_version: str | None = None) -> Path:
    """A copy of the BTCV bundle with a small network written into its configs and weights of it, at ``version``."""
    from monai.bundle import ConfigParser

    from e2enet_monai.apps.config_values import set_config_values

    bundle = root / NAME
    shutil.copytree(bundles_dir() / NAME, bundle, ignore=shutil.ignore_patterns("models", "eval"))
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    meta["version"] = version
    meta["changelog"][version] = "test"
    if monai_version:
        meta["monai_version"] = monai_version
    (bundle / "configs/metadata.json").write_text(json.dumps(meta, indent=4))
    set_config_values(bundle, {"channels": [4, 8, 16], "strides": [1, 2, 2]}, ["inference.json", "train.json"])
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs/inference.json"))
    (bundle / "models").mkdir()
    torch.manual_seed(0)
    torch.save({"model": parser.get_parsed_content("network_def").state_dict()}, bundle / "models/model.pt")
    return bundle


def published(tmp_path, site, url, versions=("0.2.0",), **kwargs) -> dict:
    entries = {}
    for v in versions:
        bundle = make_bundle(tmp_path / f"src_{v}", v, **kwargs)
        entries[v] = package_bundle(bundle, site, base_url=url, index=site / "index.json")
    return entries


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_package_is_deterministic_and_complete(tmp_path):
    bundle = make_bundle(tmp_path / "src")
    a = package_bundle(bundle, tmp_path / "a", base_url="http://host/dl")
    b = package_bundle(bundle, tmp_path / "b", base_url="http://host/dl")
    zip_a, zip_b = tmp_path / "a" / f"{NAME}_v0.2.0.zip", tmp_path / "b" / f"{NAME}_v0.2.0.zip"
    assert zip_a.read_bytes() == zip_b.read_bytes() and a == b
    assert a == {"name": NAME, "version": "0.2.0", "url": f"http://host/dl/{NAME}_v0.2.0.zip",
                 "sha256": hashlib.sha256(zip_a.read_bytes()).hexdigest(), "size": zip_a.stat().st_size,
                 "monai_version": json.loads((bundle / "configs/metadata.json").read_text())["monai_version"]}
    with zipfile.ZipFile(zip_a) as zf:
        names = zf.namelist()
        assert all(n.startswith(f"{NAME}/") for n in names) and f"{NAME}/models/model.pt" in names
        assert f"{NAME}/configs/inference_topk.json" in names and not any("/eval/" in n for n in names)
        large = yaml.safe_load(zf.read(f"{NAME}/large_files.yml"))["large_files"]
    weights_sha = hashlib.sha256((bundle / "models/model.pt").read_bytes()).hexdigest()
    assert large == [{"path": "models/model.pt", "url": f"http://host/dl/{NAME}_v0.2.0/models/model.pt",
                      "hash_val": weights_sha, "hash_type": "sha256"}]
    with pytest.raises(FileExistsError, match="bump the version"):
        package_bundle(bundle, tmp_path / "a")
    (bundle / "models/model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="train the bundle first"):
        package_bundle(bundle, tmp_path / "c")


def test_index_update_replaces_same_version_and_sorts(tmp_path):
    index = tmp_path / "index.json"
    for v, sha in (("0.10.0", "a"), ("0.2.0", "b"), ("0.2.0", "c")):
        update_index(index, {"name": NAME, "version": v, "url": "u", "sha256": sha, "size": 1, "monai_version": "1"})
    data = json.loads(index.read_text())["bundles"]
    assert [(e["version"], e["sha256"]) for e in data] == [("0.2.0", "c"), ("0.10.0", "a")]


def test_download_latest_by_name_through_the_index(tmp_path, server):
    site, url = server
    entries = published(tmp_path, site, url, versions=("0.2.0", "0.10.0"))
    dest = tmp_path / "dl"
    path = download(NAME, index_url=f"{url}/index.json", bundle_dir=dest)
    assert path == (dest / NAME).resolve()
    assert json.loads((path / "configs/metadata.json").read_text())["version"] == "0.10.0"  # 0.10 > 0.2
    assert (path / "models/model.pt").read_bytes() == (tmp_path / "src_0.10.0" / NAME / "models/model.pt").read_bytes()
    assert leftovers(dest) == [NAME]  # no temporary files
    with pytest.raises(FileExistsError, match="overwrite"):
        download(NAME, index_url=f"{url}/index.json", bundle_dir=dest)
    download(NAME, version="0.2.0", index_url=f"{url}/index.json", bundle_dir=dest, overwrite=True)
    assert json.loads((path / "configs/metadata.json").read_text())["version"] == "0.2.0"
    assert leftovers(dest) == [NAME] and entries["0.2.0"]["sha256"]


def test_same_zip_works_with_monai_bundle_download_and_large_files(tmp_path, server):
    site, url = server
    entry = published(tmp_path, site, url)["0.2.0"]
    dest = tmp_path / "monai_dl"
    cmd = [sys.executable, "-m", "monai.bundle", "download", "--name", NAME, "--url", entry["url"],
           "--bundle_dir", str(dest)]
    proc = warm.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bundle = dest / NAME
    weights = bundle / "models/model.pt"
    original = (tmp_path / "src_0.2.0" / NAME / "models/model.pt").read_bytes()
    assert weights.read_bytes() == original
    weights.unlink()  # fetched again from large_files.yml, with its sha256 checked
    cmd = [sys.executable, "-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)]
    proc = warm.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert weights.read_bytes() == original
    weights.write_bytes(b"corrupted")  # an existing file with the wrong hash is an error
    proc = warm.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "hash" in (proc.stdout + proc.stderr).lower()


def test_tampered_zip_is_rejected_before_extraction(tmp_path, server):
    site, url = server
    published(tmp_path, site, url)
    zip_path = site / f"{NAME}_v0.2.0.zip"
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    dest = tmp_path / "dl"
    with pytest.raises(BundleDownloadError, match="sha256 mismatch .* nothing was extracted"):
        download(NAME, index_url=f"{url}/index.json", bundle_dir=dest)
    assert leftovers(dest) == []


def test_truncated_download_is_rejected(tmp_path, server):
    site, url = server
    entry = published(tmp_path, site, url)["0.2.0"]
    index = json.loads((site / "index.json").read_text())
    index["bundles"][0]["url"] = f"{url}/cut/{Path(entry['url']).name}"
    (site / "index.json").write_text(json.dumps(index))
    dest = tmp_path / "dl"
    with pytest.raises(BundleDownloadError, match="broke off|incomplete"):
        download(NAME, index_url=f"{url}/index.json", bundle_dir=dest)
    assert leftovers(dest) == []


def test_zip_slip_archive_is_rejected(tmp_path, server):
    site, url = server
    evil = site / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr(f"{NAME}/configs/metadata.json", "{}")
        zf.writestr(f"{NAME}/../../escaped.txt", "owned")
    update_index(site / "index.json", {"name": NAME, "version": "9.9.9", "url": "evil.zip",
                                       "sha256": hashlib.sha256(evil.read_bytes()).hexdigest(),
                                       "size": evil.stat().st_size, "monai_version": "1.0.0"})
    dest = tmp_path / "deep" / "dl"
    with pytest.raises(BundleDownloadError, match="unsafe archive entry"):
        download(NAME, index_url=f"{url}/index.json", bundle_dir=dest)
    assert leftovers(dest) == [] and not list(tmp_path.rglob("escaped.txt"))


def test_unknown_name_or_version_lists_what_exists(tmp_path, server):
    site, url = server
    published(tmp_path, site, url)
    with pytest.raises(BundleDownloadError, match=r"no version '1.0.0'.*available: \['0.2.0'\]"):
        download(NAME, version="1.0.0", index_url=f"{url}/index.json", bundle_dir=tmp_path / "dl")
    with pytest.raises(BundleDownloadError, match="is not in"):
        download("nope", index_url=f"{url}/index.json", bundle_dir=tmp_path / "dl")
    with pytest.raises(BundleDownloadError, match="cannot fetch"):
        download(NAME, index_url=f"{url}/missing.json", bundle_dir=tmp_path / "dl")
    assert leftovers(tmp_path / "dl") == []


def test_newer_monai_version_warns(tmp_path, server, caplog):
    site, url = server
    published(tmp_path, site, url, monai_version="99.0.0")
    with caplog.at_level(logging.WARNING):
        download(NAME, index_url=f"{url}/index.json", bundle_dir=tmp_path / "dl")
    assert "newer than the installed" in caplog.text


def test_download_cli(tmp_path, server):
    site, url = server
    published(tmp_path, site, url)
    tool = Path(__file__).resolve().parents[1] / "tools/download_bundle.py"
    cmd = [sys.executable, str(tool), NAME, f"{url}/index.json", "--bundle_dir", str(tmp_path / "dl")]
    proc = warm.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "dl" / NAME / "models/model.pt").is_file()
    proc = warm.run(cmd + ["--version", "7.7.7"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no version '7.7.7'" in proc.stderr
