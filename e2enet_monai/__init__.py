"""e2enet-monai: E2ENet and top-k patch inference as MONAI components and MONAI Bundles.

Subpackages load on first use (``e2enet_monai.networks`` after ``import e2enet_monai``), so bundle configs can
``$import e2enet_monai`` and refer to ``e2enet_monai.<subpackage>.<name>`` while importing one layer does not
import the layers above it. The layering is in ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.9.9"

SUBPACKAGES = ("apps", "benchmarks", "bundle", "data", "handlers", "inferers", "losses", "networks", "release",
               "segment", "sparse", "transforms", "utils")


def __getattr__(name: str) -> ModuleType:
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
