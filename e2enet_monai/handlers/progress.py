"""Everything beyond weights, optimizer, scheduler and trainer that decides what a resumed training does."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.engines import Evaluator
from monai.transforms import Compose, Randomizable, Transform

__all__ = ["TrainingProgress", "random_transforms"]


def random_transforms(root: object) -> list[Randomizable]:
    """
    Every ``Randomizable`` reachable from ``root`` (a ``Compose``, or a dataset's transform) through attributes and
    lists, in a fixed depth-first order: the objects whose ``R`` generators MONAI seeds (``set_rnd``) and whose
    draws decide crops and augmentation.
    """
    found: list[Randomizable] = []
    seen: set[int] = set()

    def walk(obj: object) -> Iterator[object]:
        if isinstance(obj, (list, tuple)):
            for item in obj:
                yield from walk(item)
        elif isinstance(obj, (Transform, Compose)) and id(obj) not in seen:
            seen.add(id(obj))
            yield obj
            for value in vars(obj).values():
                yield from walk(value)

    for obj in walk(root):
        if isinstance(obj, Randomizable):
            found.append(obj)
    return found


def _numpy_state(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _from_numpy_state(state: dict[str, Any]) -> tuple:
    return (state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"])


class TrainingProgress:
    """
    A stateful object for the resume checkpoint (``"progress"`` in the bundles' ``last_checkpoint``): the
    evaluator's best metric and its epoch (so a resumed run neither logs a spurious "new best" nor replaces a better
    ``model.pt``), the global torch / numpy / Python RNGs, the ``R`` generator of every random transform of the
    training data (crops and augmentation) and the state of a sampler that has one
    (:class:`~e2enet_monai.data.ResumableRandomSampler`).

    With ``num_workers=0`` (the deterministic CPU mode) N epochs, a kill and a resume for M more give the weights,
    best metric and ``model.pt`` of N + M uninterrupted epochs. With data-loader workers the transforms run in the
    workers, seeded per pass of the data, so a resumed run draws other augmentations than an uninterrupted one would
    have (the schedule, masks and best metric are still restored).

    Args:
        evaluator: the validation evaluator (its ``state.best_metric`` and ``state.best_metric_epoch``).
        transform: the training transform chain whose random transforms are saved.
        sampler: the training sampler; saved when it has ``state_dict`` / ``load_state_dict``.
    """

    def __init__(self, evaluator: Evaluator, transform: object = None, sampler: object = None) -> None:
        self.evaluator = evaluator
        self.transforms = random_transforms(transform) if transform is not None else []
        self.sampler = sampler if hasattr(sampler, "state_dict") and hasattr(sampler, "load_state_dict") else None

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        return {
            "best_metric": float(state.best_metric),
            "best_metric_epoch": int(state.best_metric_epoch),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state(np.random.get_state()),
            "python_rng": random.getstate(),
            "transform_rngs": [_numpy_state(t.R.get_state()) for t in self.transforms],
            "sampler": self.sampler.state_dict() if self.sampler is not None else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["transform_rngs"]) != len(self.transforms):
            raise ValueError(f"the checkpoint holds {len(state['transform_rngs'])} random transform state(s) but the "
                             f"training chain has {len(self.transforms)}: it was saved with other transforms.")
        self.evaluator.state.best_metric = state["best_metric"]
        self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(_from_numpy_state(state["numpy_rng"]))
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))
        for t, rng in zip(self.transforms, state["transform_rngs"]):
            t.R.set_state(_from_numpy_state(rng))
        if self.sampler is not None and state["sampler"]:
            self.sampler.load_state_dict(state["sampler"])
