"""
``e2enet-segment`` (also ``python -m e2enet_monai.segment``): one command from scans to label maps (or masks, or a
DICOM-SEG), statistics and previews, running a bundle's own inference configs. See ``command.py`` for the flow and
the README for examples.
"""

from e2enet_monai.segment.command import CaseResult, Options, build_parser, cli, main, segment
from e2enet_monai.segment.inputs import Case, DicomSeries, find_cases
from e2enet_monai.segment.source import BundleSource, default_cache, resolve_bundle

__all__ = ["BundleSource", "Case", "CaseResult", "DicomSeries", "Options", "build_parser", "cli", "default_cache",
           "find_cases", "main", "resolve_bundle", "segment"]
