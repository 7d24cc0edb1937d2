"""Run the Model Zoo checks (layout, changelog, metadata schema, net in/out, TorchScript export, workflow
properties) on every bundle under bundles/, through MONAI's own monai.bundle functions."""

from __future__ import annotations

import sys
from pathlib import Path

import fire

from e2enet_monai.bundle.verify import verify_bundle

ROOT = Path(__file__).resolve().parents[1]


def main(bundles: str | tuple | None = None, schema: str | tuple | None = None) -> None:
    """
    Verify bundles; exits with status 1 if any check fails.

    Args:
        bundles: comma-separated bundle folders (default: every folder in bundles/).
        schema: extra metadata schema file(s) to validate against besides our shipped one, e.g. MONAI's official
            meta_schema_20220324.json downloaded beforehand (comma-separated).
    """
    def as_list(v):
        return [] if v is None else ([x for x in v.split(",") if x] if isinstance(v, str) else list(v))

    folders = as_list(bundles) or sorted(str(p) for p in (ROOT / "bundles").iterdir() if p.is_dir())
    failed = False
    for folder in folders:
        print(f"== {folder}")
        for check, result in verify_bundle(folder, as_list(schema)).items():
            print(f"  {check:<40} {result}")
            failed |= result != "ok"
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    fire.Fire(main)
