"""Writing segmentations safely."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

from monai.transforms import SaveImaged

__all__ = ["SaveSegmentationd"]

logger = logging.getLogger(__name__)


class SaveSegmentationd(SaveImaged):
    """
    MONAI's ``SaveImaged`` for label maps, that refuses to replace an existing file unless ``overwrite`` is set.
    MONAI's writer overwrites silently; a user re-running inference into the same folder would lose earlier
    results without notice. Each written path is logged (INFO). Files are written as
    ``<output_dir>/<case>/<case><postfix><ext>`` (MONAI's ``separate_folder`` naming). Being a ``SaveImaged``,
    MONAI Label drops it from its post-transforms.

    Args:
        overwrite: allow replacing existing outputs.
        kwargs: passed to ``SaveImaged`` (``output_dir``, ``output_postfix``, ``output_dtype``, ...).
    """

    def __init__(self, *args, overwrite: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.overwrite = overwrite

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        targets = [self._target(data[key]) for key in self.key_iterator(dict(data))]
        if not self.overwrite:
            for target in targets:
                if target is not None and target.exists():
                    raise FileExistsError(
                        f"{target} already exists; choose another output_dir or pass --overwrite True to replace it."
                    )
        out = super().__call__(data)
        for target in targets:
            if target is not None:
                logger.info(f"wrote {target}")
        return out

    def _target(self, img) -> Path | None:
        meta = getattr(img, "meta", {}) or {}
        source = meta.get("filename_or_obj")
        if not source:
            return None
        return Path(self.saver.folder_layout.filename(subject=str(source)))  # the layout adds the extension
