"""Build a bundle's release zip `<name>_v<version>.zip` and add it to an index JSON that users download from."""

from __future__ import annotations

import fire

from e2enet_monai.release import package_bundle
from e2enet_monai.utils.errors import cli_entry


@cli_entry
def main(bundle: str, out_dir: str = "dist", base_url: str = "", index: str = "", require_weights: bool = True) -> None:
    """
    Zip BUNDLE (bundle folder at the top, deterministic bytes, weights included) into OUT_DIR and, with --index,
    create or update that index JSON (name, version, url, sha256, size, monai_version).

    Args:
        bundle: bundle folder, e.g. bundles/e2enet_btcv_segmentation (with models/model.pt).
        out_dir: output folder; serve it as is (zip, weight files for large_files.yml, index).
        base_url: URL OUT_DIR will be served from; without it the index holds URLs relative to the index.
        index: index JSON path, e.g. dist/index.json.
        require_weights: refuse a bundle without models/model.pt.
    """
    entry = package_bundle(bundle, out_dir, base_url=base_url, index=index or None, require_weights=require_weights)
    print(f"{entry['name']} {entry['version']}: {entry['url']} ({entry['size']} bytes, sha256 {entry['sha256']})")
    if index:
        print(f"updated {index}")


if __name__ == "__main__":
    fire.Fire(main)
