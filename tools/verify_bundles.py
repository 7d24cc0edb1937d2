"""Run the Model Zoo checks (layout, changelog, metadata schema, net in/out, TorchScript export, workflow
properties) on every bundle under bundles/, through MONAI's own monai.bundle functions."""

from __future__ import annotations

import sys

import fire

from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundle_path
from e2enet_monai.release.verify import verify_bundle
from e2enet_monai.utils.cli import as_list


def main(bundles: str | tuple | None = None, schema: str | tuple | None = None) -> None:
    """
    Verify bundles; exits with status 1 if any check fails.

    Args:
        bundles: comma-separated bundle folders (default: the shipped bundles).
        schema: extra metadata schema file(s) to validate against besides our shipped one, e.g. MONAI's official
            meta_schema_20220324.json downloaded beforehand (comma-separated).
    """
    folders = as_list(bundles) or [str(bundle_path(name)) for name in sorted(SHIPPED_BUNDLES)]
    failed = False
    for folder in folders:
        print(f"== {folder}")
        for check, result in verify_bundle(folder, as_list(schema)).items():
            print(f"  {check:<40} {result}")
            failed |= result != "ok"
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    fire.Fire(main)
