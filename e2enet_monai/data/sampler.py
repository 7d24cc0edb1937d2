"""A shuffling sampler whose position can be saved, so a resumed training continues the same pass of the data."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableRandomSampler"]


class ResumableRandomSampler(Sampler[int]):
    """
    Shuffle ``data_source`` anew on every pass (pass ``p`` uses the permutation of seed ``seed + p``), as
    ``shuffle=True`` does, but with a ``state_dict`` (pass number and position within it) that a resume checkpoint
    stores. PyTorch's ``RandomSampler`` draws each pass's order from the global RNG when the iterator is created,
    so a training resumed in the middle of a pass (``epoch_length`` not a multiple of the data) starts a new pass
    where an uninterrupted one would have continued the old one.

    The position counts the indices handed out, which with ``num_workers=0`` are the samples consumed; data-loader
    workers prefetch, so with workers a resume skips the prefetched samples of the interrupted pass.

    Args:
        data_source: the dataset (only its length is used).
        seed: seed of the first pass.
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        self.num_samples = len(data_source)
        self.seed = int(seed)
        self.pass_index = 0
        self.position = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.pass_index)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        while self.position < self.num_samples:
            self.position += 1
            yield order[self.position - 1]
        self.pass_index += 1
        self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"pass_index": self.pass_index, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.pass_index, self.position = int(state["pass_index"]), int(state["position"])
