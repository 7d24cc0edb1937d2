"""Download a released bundle by name through an index JSON, verifying its sha256 before extracting."""

from __future__ import annotations

import logging

import fire

from e2enet_monai.release import download


def main(name: str, index_url: str, version: str = "", bundle_dir: str = "bundles", overwrite: bool = False) -> None:
    """
    Resolve NAME (latest version unless --version) in the index at INDEX_URL, download, check size and sha256,
    refuse unsafe archives, and extract atomically to BUNDLE_DIR/NAME.

    Args:
        name: bundle name, e.g. e2enet_btcv_segmentation.
        index_url: URL (http(s):// or file://) of the index JSON written by tools/package_bundle.py.
        version: exact version; default the highest listed.
        bundle_dir: parent folder of the downloaded bundle.
        overwrite: replace an existing BUNDLE_DIR/NAME.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    path = download(name, version=str(version) or None, index_url=index_url, bundle_dir=bundle_dir, overwrite=overwrite)
    print(path)


if __name__ == "__main__":
    fire.Fire(main)
