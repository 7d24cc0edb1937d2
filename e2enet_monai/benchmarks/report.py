"""The one report format of the benchmarks: a Markdown table under a header line, and the same rows as JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["print_report", "write_report"]


def write_report(out_dir: str | os.PathLike, name: str, header: str, columns: Sequence[str],
                 cells: Sequence[Sequence[str]], rows: list[dict], align_right: bool = False) -> tuple[Path, Path]:
    """
    Write ``<name>.md`` (``header``, then a table of ``columns`` x ``cells``) and ``<name>.json`` (``header``,
    the raw ``rows`` and the torch version) into ``out_dir``; return both paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rule = "|" + "|".join(("---:" if align_right and i else "---") for i in range(len(columns))) + "|"
    lines = [header, "", "| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps({"header": header, "rows": rows, "torch": torch.__version__}, indent=2) + "\n")
    return md, js


def print_report(paths: Sequence[Path]) -> None:
    """What every benchmark tool prints at its end: the Markdown table (the first of ``paths``), then every file
    it wrote."""
    print(Path(paths[0]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths))
