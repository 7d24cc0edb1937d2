"""
Checkpoints that are never half-written and never missing: the best model (``models/model.pt``) and the per-epoch
resume checkpoint.

Why not MONAI's ``CheckpointSaver``: it writes with ignite's ``DiskSaver(atomic=False)`` (a crash mid-write leaves
a truncated ``model.pt``) and, like ignite's ``Checkpoint``, removes the previous file before writing the next (a
crash between the two leaves none). :class:`AtomicDiskSaver` writes to a temporary file, renames it into place,
and removes the superseded file only after that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from e2enet_monai.utils.io import atomic_torch_save

__all__ = ["AtomicDiskSaver", "BestModelSaver", "EpochCheckpointSaver"]

logger = logging.getLogger(__name__)


class AtomicDiskSaver(DiskSaver):
    """
    ignite ``DiskSaver`` that writes atomically (temporary file, then rename; readable by group and others) and
    defers every ``remove`` until the next file has been written, so a crash at any moment leaves the last complete
    checkpoint on disk.
    """

    def __init__(self, dirname: str | os.PathLike) -> None:
        super().__init__(dirname=str(dirname), require_empty=False, atomic=True, create_dir=True)
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        atomic_torch_save(checkpoint, Path(self.dirname) / filename)
        for old in self._pending:
            if old != filename:
                super().remove(old)
        self._pending = []

    def remove(self, filename: str) -> None:
        self._pending.append(filename)


def _states(save_dict: Mapping[str, Any]) -> dict[str, Any]:
    return {key: obj.state_dict() for key, obj in save_dict.items()}


class BestModelSaver:
    """
    Save ``save_dict`` (objects with ``state_dict()``) to ``<save_dir>/<filename>`` whenever the evaluator it is
    attached to reports a new best key metric: MONAI's evaluator keeps ``state.best_metric`` and
    ``state.best_metric_epoch`` (restored on resume by :class:`~e2enet_monai.handlers.TrainingProgress`), and a new
    best is an epoch whose ``best_metric_epoch`` is the current one. Written atomically.

    Args:
        save_dir: folder of the checkpoint (created if missing).
        save_dict: ``{"model": ..., "sparse": ...}``: what the checkpoint holds.
        filename: checkpoint file name.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], filename: str = "model.pt") -> None:
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch:
            return
        atomic_torch_save(_states(self.save_dict), self.path)
        logger.info(f"best {engine.state.key_metric_name} {engine.state.best_metric:.4f} at epoch "
                    f"{engine.state.epoch}: saved {self.path}")


class EpochCheckpointSaver:
    """
    After every ``interval`` epochs of the trainer it is attached to, save ``save_dict`` to
    ``<save_dir>/<prefix>_checkpoint_epoch=<epoch>.pt`` (the name MONAI's ``CheckpointSaver`` gives it), keeping
    the ``n_saved`` newest; what ``--resume_from`` restores. Files of that name already in ``save_dir`` (the run
    being resumed) count among the kept ones, so a resumed run keeps ``n_saved`` in all, as an uninterrupted one.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], prefix: str = "last",
                 n_saved: int = 1, interval: int = 1) -> None:
        self.interval = int(interval)
        self.save_dir, self.prefix = Path(save_dir), prefix
        self.checkpoint = Checkpoint(
            to_save=dict(save_dict), save_handler=AtomicDiskSaver(save_dir), filename_prefix=prefix,
            score_function=lambda engine: engine.state.epoch, score_name="epoch", n_saved=n_saved)

    def attach(self, engine: Engine) -> None:
        earlier = []
        for path in self.save_dir.glob(f"{self.prefix}_checkpoint_epoch=*.pt"):
            epoch = path.stem.rpartition("=")[2]
            if epoch.isdigit():
                earlier.append((int(epoch), path.name))
        if earlier:
            self.checkpoint.load_state_dict({"_saved": sorted(earlier)})
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.checkpoint)
