"""Dynamic sparse training of kernel masks: prune the weakest kernels, regrow as many, on a decaying schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from e2enet_monai.sparse.masks import KernelMasks, channel_mask, input_channel_axis

__all__ = ["GROWTH_MODES", "DynamicSparsity", "cosine_death_rate"]

GROWTH_MODES = ("random", "gradient")


def cosine_death_rate(iteration: int, total: int, initial: float = 0.5, final: float = 0.001) -> float:
    """Cosine decay from ``initial`` at iteration 0 to ``final`` at ``total`` (constant afterwards)."""
    progress = min(max(iteration / max(total, 1), 0.0), 1.0)
    return final + 0.5 * (initial - final) * (1.0 + math.cos(math.pi * progress))


class DynamicSparsity:
    """
    Keeps selected weights of a model sparse at kernel granularity and updates which kernels are active.

    Call :meth:`after_step` after every ``optimizer.step()``: it zeroes inactive kernels in the weights and in the
    optimizer's per-weight state, counts the iteration and, every ``update_frequency`` iterations, prunes the
    ``ceil(death_rate * active)`` active kernels of smallest L1 norm of each tensor and regrows as many inactive
    ones (at zero), so every tensor keeps exactly its number of active kernels. With ``mask_gradients``, call
    :meth:`before_step` between ``backward()`` and ``optimizer.step()``. As in the paper, a kernel regrown at zero
    whose input channel is fed only by zero kernels (or whose output feeds only zero kernels) gets no gradient and
    stays zero until a later update prunes it.

    Args:
        model: the network; its masked weights are zeroed at construction.
        density: target fraction of active weights over the selected tensors, in (0, 1].
        distribution: ``"uniform"`` or ``"erk"`` (see :func:`~e2enet_monai.sparse.density.kernel_densities`).
        parameters: regular expressions selecting the tensors (default: the model's ``mesh_parameter_names()``).
        growth: ``"random"`` (uniform among inactive kernels) or ``"gradient"`` (largest gradient L1 norm).
        death_rate: initial fraction of active kernels replaced at an update, decayed by a cosine to
            ``final_death_rate`` over ``total_iterations``.
        final_death_rate: death rate at the end of training.
        update_frequency: iterations between mask updates.
        total_iterations: length of training (for the schedule); may be set later (e.g. by the ignite handler).
        mask_gradients: also zero the gradients of inactive kernels before each step.
        seed: seed of the initial masks and of random regrowth; the same seed gives the same masks.
        structure: ``"kernel"`` (the paper's: single kernels are pruned and regrown) or ``"channel"`` (whole input
            channels of each tensor, scored by the L1 norm of all their kernels, so that
            :func:`~e2enet_monai.sparse.compact_model` can turn the trained mesh into smaller dense convolutions).
        channel_multiple: with ``structure="channel"``, every tensor keeps a multiple of this many input channels
            (see :func:`~e2enet_monai.sparse.kept_channels`; 16 suits AVX-512 CPUs, 8 AVX2); updates keep the count.
        channel_warmup: with ``structure="channel"``, the fraction of ``total_iterations`` over which the masks
            narrow from kernels to whole input channels (0: channel masks from the start). Training starts from
            random kernel masks with as many active kernels as the channel masks will have; each update before
            ``channel_warmup x total_iterations`` keeps the input channels of largest L1 norm, fewer at each update
            (linearly from all to the kept count), prunes ``ceil(death_rate x active)`` kernels among them and
            regrows kernels only in them, so each tensor keeps its number of active kernels; the first update at or
            after that iteration leaves whole input channels, and later updates prune and regrow channels.
    """

    def __init__(
        self,
        model: nn.Module,
        density: float = 0.2,
        distribution: str = "uniform",
        parameters: Sequence[str] | None = None,
        growth: str = "random",
        death_rate: float = 0.5,
        final_death_rate: float = 0.001,
        update_frequency: int = 1200,
        total_iterations: int | None = None,
        mask_gradients: bool = False,
        seed: int = 0,
        structure: str = "kernel",
        channel_multiple: int = 1,
        channel_warmup: float = 0.0,
    ) -> None:
        # density and distribution are checked by kernel_densities, through KernelMasks.random below
        if growth not in GROWTH_MODES:
            raise ValueError(f"growth mode must be one of {GROWTH_MODES}, got {growth!r}.")
        if not 0.0 <= final_death_rate <= death_rate < 1.0:
            raise ValueError(
                f"death rates must satisfy 0 <= final_death_rate <= death_rate < 1, got death_rate={death_rate}, "
                f"final_death_rate={final_death_rate}."
            )
        if update_frequency < 1:
            raise ValueError(f"update_frequency must be >= 1 iteration, got {update_frequency}.")
        if total_iterations is not None and total_iterations < 1:
            raise ValueError(f"total_iterations must be >= 1, got {total_iterations}.")
        if not 0.0 <= channel_warmup < 1.0 or (channel_warmup > 0.0 and structure != "channel"):
            raise ValueError(f"channel_warmup must be in [0, 1), and above 0 only with structure 'channel'; got "
                             f"{channel_warmup} with structure {structure!r}.")
        self.model = model
        self.growth = growth
        self.initial_death_rate = death_rate
        self.final_death_rate = final_death_rate
        self.update_frequency = update_frequency
        self.total_iterations = total_iterations
        self.mask_gradients = mask_gradients
        self.structure = structure
        self.channel_warmup = channel_warmup
        self.masks = KernelMasks.random(model, density, distribution, parameters, seed=seed, structure=structure,
                                        channel_multiple=channel_multiple)
        self._axes = {name: input_channel_axis(model, name) for name in self.masks.masks}
        # with a channel warm-up: the input channels each tensor keeps once its mask is whole channels
        self._kept = {name: int(self._units(name, mask).sum()) for name, mask in self.masks.masks.items()
                      if channel_warmup > 0.0}
        self.generator = torch.Generator().manual_seed(seed + 1)
        if channel_warmup > 0.0:  # as many active kernels, spread at random over all input channels
            self.masks = KernelMasks({name: self._random_kernels(mask.shape, int(mask.sum()))
                                      for name, mask in self.masks.masks.items()})
        self.iteration = 0
        self._grad_norms: dict[str, torch.Tensor] = {}
        self.check_schedule()
        self.masks.apply(model)

    def death_rate(self, iteration: int | None = None) -> float:
        """Death rate at ``iteration`` (default: the current one)."""
        total = self.total_iterations or 1
        return cosine_death_rate(self.iteration if iteration is None else iteration, total,
                                 self.initial_death_rate, self.final_death_rate)

    def warmup_end(self) -> int | None:
        """With ``channel_warmup``, the iteration of the update that leaves whole input channels (the first update
        at or after ``channel_warmup x total_iterations``); None without warm-up or before the length is known."""
        if self.channel_warmup == 0.0 or self.total_iterations is None:
            return None
        start = max(self.channel_warmup * self.total_iterations, self.update_frequency)
        return math.ceil(start / self.update_frequency) * self.update_frequency

    def check_schedule(self) -> None:
        """Raise a ValueError when the channel warm-up would not end with whole-channel masks before the last
        iteration (a mesh that cannot be compacted); nothing to check without warm-up or a known length."""
        end = self.warmup_end()
        if end is not None and end >= self.total_iterations:  # type: ignore[operator]
            raise ValueError(
                f"channel_warmup={self.channel_warmup} leaves whole input channels at the mask update of iteration "
                f"{end}, but training ends at iteration {self.total_iterations}: lower channel_warmup or "
                f"update_frequency ({self.update_frequency}) so that an update falls in the last "
                f"{1 - self.channel_warmup:.0%} of training.")

    def narrowing(self) -> bool:
        """True while the channel warm-up is under way: some mask is not yet whole input channels."""
        return self.channel_warmup > 0.0 and any(
            not torch.equal(mask, channel_mask(self._units(name, mask), mask.shape, self._axes[name]))
            for name, mask in self.masks.masks.items())

    def _random_kernels(self, shape: torch.Size, count: int) -> torch.Tensor:
        mask = torch.zeros(shape.numel(), dtype=torch.bool)
        mask[torch.randperm(shape.numel(), generator=self.generator)[:count]] = True
        return mask.view(shape)

    def _update_due(self) -> bool:
        done = self.total_iterations is not None and self.iteration >= self.total_iterations
        return self.iteration % self.update_frequency == 0 and not done

    @torch.no_grad()
    def before_step(self) -> None:
        """Zero the gradients of inactive kernels (only with ``mask_gradients``); dense gradient norms are kept
        first when a gradient-growth update follows this step."""
        if not self.mask_gradients:
            return
        if self.growth == "gradient" and (self.iteration + 1) % self.update_frequency == 0:
            self._grad_norms = self._kernel_grad_norms()
        self.masks.apply_to_gradients(self.model)

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer | None = None) -> dict | None:
        """Re-apply masks after an optimizer step; update them when due. Returns the update statistics or None."""
        self.masks.apply(self.model)
        if optimizer is not None:
            self.masks.apply_to_optimizer(self.model, optimizer)
        self.iteration += 1
        if not self._update_due():
            return None
        stats = self.update()
        if optimizer is not None:
            self.masks.apply_to_optimizer(self.model, optimizer)
        return stats

    def _kernel_grad_norms(self) -> dict[str, torch.Tensor]:
        norms = {}
        for name, param in self.masks.parameters_of(self.model).items():
            if param.grad is None:
                raise RuntimeError(f"gradient growth needs gradients, but {name!r} has none at the mask update.")
            # one L1 norm per kernel, summed over the kernel's own spatial dims whatever the layer type
            norms[name] = param.grad.detach().abs().flatten(2).sum(dim=2).float().cpu()
        return norms

    @torch.no_grad()
    def update(self) -> dict:
        """Prune and regrow every masked tensor once at the current death rate; return per-tensor statistics."""
        rate = self.death_rate()
        grads = self._grad_norms or (self._kernel_grad_norms() if self.growth == "gradient" else {})
        self._grad_norms = {}
        narrowing = self.narrowing()
        if narrowing and self.total_iterations is None:
            raise RuntimeError("channel_warmup is a fraction of total_iterations, which is not set; pass it to "
                               "DynamicSparsity or attach SparseTrainingHandler to a trainer with an epoch length.")
        pruned_total = 0
        for name, param in self.masks.parameters_of(self.model).items():
            norms = param.detach().abs().flatten(2).sum(dim=2).float().cpu()  # L1 norm of each kernel
            replace = self._narrow if narrowing else self._replace
            pruned_total += replace(name, norms, rate, grads.get(name))
        self.masks.apply(self.model)  # pruned kernels become 0, and regrown kernels start at 0
        return {
            "iteration": self.iteration,
            "death_rate": rate,
            "pruned": pruned_total,
            "regrown": pruned_total,
            "unit": "input channels" if self.structure == "channel" and not narrowing else "kernels",
            "density": self.masks.kernel_density(),
        }

    def _replace(self, name: str, norms: torch.Tensor, rate: float, grad_norms: torch.Tensor | None) -> int:
        """Prune the ``ceil(rate x active)`` weakest units (kernels or input channels) of tensor ``name`` and regrow
        as many among those inactive before; returns how many."""
        shape = self.masks.masks[name].shape
        mask = self._units(name, self.masks.masks[name])
        active = int(mask.sum())
        n = min(math.ceil(rate * active), active)
        if n == 0:
            return 0
        scores = self._units(name, norms)
        scores[~mask] = float("inf")
        prune = torch.topk(scores, n, largest=False).indices
        inactive_before = (~mask).nonzero().flatten()
        mask[prune] = False
        grow = self._grow(inactive_before, n, None if grad_norms is None else self._units(name, grad_norms))
        if len(grow) < n:  # not enough inactive units (density near 1): re-activate the pruned ones
            grow = torch.cat([grow, prune[: n - len(grow)]])
        mask[grow] = True
        self.masks.masks[name] = (mask.view(shape) if self.structure == "kernel"
                                  else channel_mask(mask, shape, self._axes[name]))
        return n

    def _narrow(self, name: str, norms: torch.Tensor, rate: float, grad_norms: torch.Tensor | None) -> int:
        """One warm-up update of tensor ``name``: keep the input channels of largest L1 norm (fewer at each update,
        only the kept count at :meth:`warmup_end`), prune ``ceil(rate x active)`` of their weakest kernels and
        regrow kernels in them up to the tensor's count; returns how many kernels were pruned or dropped with their
        channel (as many were regrown)."""
        shape, axis = self.masks.masks[name].shape, self._axes[name]
        mask = self.masks.masks[name].clone()
        budget, channels, kept = int(mask.sum()), shape[axis], self._kept[name]
        progress = min(self.iteration / (self.channel_warmup * self.total_iterations), 1.0)  # type: ignore[operator]
        live = kept if self.iteration >= self.warmup_end() else kept + round((channels - kept) * (1 - progress))
        units = torch.zeros(channels, dtype=torch.bool)
        units[torch.topk(self._units(name, norms), live).indices] = True
        live_kernels = channel_mask(units, shape, axis)
        if live == kept:  # the last warm-up update: whole channels from now on
            self.masks.masks[name] = live_kernels
            return budget - int((mask & live_kernels).sum())
        inactive_before = (~mask & live_kernels).flatten().nonzero().flatten()
        mask &= live_kernels
        flat = mask.flatten()
        n = min(math.ceil(rate * int(flat.sum())), int(flat.sum()))
        scores = norms.flatten().clone()
        scores[~flat] = float("inf")
        prune = torch.topk(scores, n, largest=False).indices
        flat[prune] = False
        missing = budget - int(flat.sum())
        grow = self._grow(inactive_before, missing, None if grad_norms is None else grad_norms.flatten())
        if len(grow) < missing:  # too few inactive kernels in the live channels: re-activate pruned ones
            grow = torch.cat([grow, prune[: missing - len(grow)]])
        flat[grow] = True
        self.masks.masks[name] = flat.view(shape)
        return missing

    def _grow(self, candidates: torch.Tensor, n: int, grad_scores: torch.Tensor | None) -> torch.Tensor:
        """Up to ``n`` of the unit indices ``candidates``: at random, or by largest gradient norm."""
        if self.growth == "random":
            return candidates[torch.randperm(len(candidates), generator=self.generator)[:n]]
        return candidates[torch.topk(grad_scores[candidates], min(n, len(candidates))).indices]  # type: ignore[index]

    def _units(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Per pruning unit of tensor ``name``, from per-kernel ``values`` ``(a, b)``: the kernels themselves
        (flattened), or for ``"channel"`` structure one value per input channel (summed; a bool mask: any)."""
        if self.structure == "kernel":
            return values.flatten().clone()
        other = 1 - self._axes[name]
        return values.any(dim=other) if values.dtype == torch.bool else values.sum(dim=other)

    def state_dict(self) -> dict:
        return {
            "masks": self.masks.state_dict(),
            "iteration": self.iteration,
            "generator": self.generator.get_state(),
            "total_iterations": self.total_iterations,
            "structure": self.structure,
            "channel_warmup": self.channel_warmup,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("structure", "kernel") != self.structure:
            raise ValueError(f"sparse state was trained with structure {state.get('structure', 'kernel')!r}, this "
                             f"run uses {self.structure!r}; pass the same sparse structure to resume.")
        if state.get("channel_warmup", 0.0) != self.channel_warmup:
            raise ValueError(f"sparse state was trained with channel_warmup {state.get('channel_warmup', 0.0)}, this "
                             f"run uses {self.channel_warmup}; pass the same channel warm-up to resume.")
        if set(state["masks"]) != set(self.masks.masks):
            raise ValueError(
                f"sparse state masks {sorted(state['masks'])[:3]}... do not match this model's masked tensors "
                f"{sorted(self.masks.masks)[:3]}..."
            )
        self.masks.load_state_dict(state["masks"])
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["generator"])
        # the length of the run being resumed wins (training may be extended); the saved one only fills a gap
        if self.total_iterations is None and state.get("total_iterations") is not None:
            self.total_iterations = int(state["total_iterations"])
        self.masks.apply(self.model)
