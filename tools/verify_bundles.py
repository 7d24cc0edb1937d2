"""Run the Model Zoo checks (layout, changelog, metadata schema, net in/out, TorchScript export, workflow
properties) on every bundle under bundles/, through MONAI's own monai.bundle functions."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import fire

from e2enet_monai.bundle.registry import SHIPPED_BUNDLES, bundle_path
from e2enet_monai.release.verify import verify_bundle
from e2enet_monai.utils.cli import as_list


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send whatever the checks write to standard output (MONAI's loggers hold it from import) to standard error."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main(bundles: str | tuple | None = None, schema: str | tuple | None = None) -> None:
    """
    Verify bundles; exits with status 1 if any check fails. Standard output is the report alone (a ``== folder``
    line, then one line per check); MONAI's log lines go to standard error.

    Args:
        bundles: comma-separated bundle folders (default: the shipped bundles).
        schema: extra metadata schema file(s) to validate against besides our shipped one, e.g. MONAI's official
            meta_schema_20220324.json downloaded beforehand (comma-separated).
    """
    folders = as_list(bundles) or [str(bundle_path(name)) for name in sorted(SHIPPED_BUNDLES)]
    failed = False
    for folder in folders:
        with _stdout_to_stderr():
            results = verify_bundle(folder, as_list(schema))
        print(f"== {folder}", flush=True)
        for check, result in results.items():
            print(f"  {check:<40} {result}")
            failed |= result != "ok"
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    fire.Fire(main)
