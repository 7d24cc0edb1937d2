"""The ``monai.bundle run`` commands that a bundle's docs give, as written, for tests that run them."""

import re
from pathlib import Path

BASE_OPTIONS = {"config_file", "datalist", "output_dir"}


def docs_command(bundle: Path, config_file: str, extra_options=(), **paths) -> str:
    """
    The one inference command of ``bundle``'s ``docs/README.md`` for ``config_file`` whose options beyond
    ``--config_file``, ``--datalist`` and ``--output_dir`` are exactly ``extra_options``, exactly as written
    (backslash continuations joined), with only its placeholder paths replaced: ``paths`` maps each placeholder
    (e.g. ``"['/path/a.nii.gz']"``) to a real value.
    """
    text = (bundle / "docs/README.md").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()
             if line.strip().startswith(f"python -m monai.bundle run --config_file {config_file} ")
             and set(re.findall(r"\s--(\w+)", line)) - BASE_OPTIONS == set(extra_options)]
    assert len(lines) == 1, lines
    line = " ".join(lines[0].split())
    for placeholder, real in paths.items():
        assert placeholder in line, (placeholder, line)
        line = line.replace(placeholder, real)
    return line
