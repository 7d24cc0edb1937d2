"""Ignite handler that trains a network's selected weights with dynamic kernel sparsity."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch.nn as nn
from ignite.engine import Engine, Events
from monai.engines import Workflow
from monai.engines.utils import IterationEvents

from e2enet_monai.networks.utils import unwrap_parallel
from e2enet_monai.sparse.dynamic import DynamicSparsity

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["SparseTrainingHandler"]


class SparseTrainingHandler:
    """
    Attach :class:`DynamicSparsity` to a MONAI/ignite trainer. Defaults are the E2ENet paper's: density 0.2,
    uniform allocation, random regrowth, a mask update every 1200 iterations, death rate 0.5 cosine-decayed to
    0.001 over the whole run (``max_epochs x epoch_length`` unless ``total_iterations`` is given).

    Masks are applied after every optimizer step (to weights and optimizer state). The handler has
    ``state_dict``/``load_state_dict`` (masks, iteration, RNG), so putting it in a CheckpointSaver's ``save_dict``
    and a CheckpointLoader's ``load_dict`` resumes with the same masks and schedule. Update statistics go to the
    logger ``name`` and, when a ``summary_writer`` (e.g. ``torch.utils.tensorboard.SummaryWriter``) is given, to
    TensorBoard.

    Args:
        network: the model being trained (unwrapped from DDP automatically).
        enabled: False turns the handler into a no-op (dense training from the same config).
        summary_writer: optional TensorBoard writer for per-update scalars.
        name: logger name.
        density, distribution, parameters, growth, death_rate, final_death_rate, update_frequency,
        total_iterations, mask_gradients, seed, structure, channel_multiple: see :class:`DynamicSparsity`.
    """

    def __init__(
        self,
        network: nn.Module,
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
        enabled: bool = True,
        summary_writer: SummaryWriter | None = None,
        name: str = "SparseTraining",
    ) -> None:
        self.enabled = enabled
        self.logger = logging.getLogger(name)
        self.summary_writer = summary_writer
        self._total_given = total_iterations is not None
        # validated and masked now, so a wrong setting fails at start-up, not after an hour of training
        self.sparsity = (
            DynamicSparsity(unwrap_parallel(network), density=density, distribution=distribution,
                            parameters=parameters, growth=growth, death_rate=death_rate,
                            final_death_rate=final_death_rate, update_frequency=update_frequency,
                            total_iterations=total_iterations, mask_gradients=mask_gradients, seed=seed,
                            structure=structure, channel_multiple=channel_multiple)
            if enabled
            else None
        )

    def attach(self, engine: Engine) -> None:
        if self.sparsity is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        monai_events = isinstance(engine, Workflow)  # MONAI engines always register IterationEvents
        if self.sparsity.mask_gradients:
            if not monai_events:
                raise ValueError("mask_gradients needs a MONAI trainer (it hooks IterationEvents.BACKWARD_COMPLETED).")
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, lambda _: self.sparsity.before_step())
        step_event = IterationEvents.MODEL_COMPLETED if monai_events else Events.ITERATION_COMPLETED
        engine.add_event_handler(step_event, self._step)

    def _started(self, engine: Engine) -> None:
        if not self._total_given and engine.state.epoch_length is not None:
            self.sparsity.total_iterations = engine.state.max_epochs * engine.state.epoch_length
        self.sparsity.masks.apply(self.sparsity.model)  # also after a CheckpointLoader restored dense weights
        density = self.sparsity.masks.kernel_density()
        active, total = self.sparsity.masks.weight_counts(self.sparsity.model)
        self.logger.info(
            f"sparse training of {len(density)} tensors: {active}/{total} weights active ({active / total:.3f}), "
            f"iteration {self.sparsity.iteration}/{self.sparsity.total_iterations}, "
            f"update every {self.sparsity.update_frequency}, growth {self.sparsity.growth}, structure "
            f"{self.sparsity.structure}."
        )

    def _step(self, engine: Engine) -> None:
        stats = self.sparsity.after_step(getattr(engine, "optimizer", None))
        if stats is None:
            return
        densities = stats["density"]
        unit = "kernels" if self.sparsity.structure == "kernel" else "input channels"
        self.logger.info(
            f"mask update at iteration {stats['iteration']}: death rate {stats['death_rate']:.4f}, "
            f"pruned {stats['pruned']} and regrew {stats['regrown']} {unit}; per-tensor density "
            f"min {min(densities.values()):.4f} max {max(densities.values()):.4f}."
        )
        if self.summary_writer is not None:
            step = stats["iteration"]
            self.summary_writer.add_scalar("sparse/death_rate", stats["death_rate"], step)
            self.summary_writer.add_scalar("sparse/pruned_kernels", stats["pruned"], step)
            for name, value in densities.items():
                self.summary_writer.add_scalar(f"sparse/density/{name}", value, step)

    def state_dict(self) -> dict:
        return self.sparsity.state_dict() if self.sparsity is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.sparsity is not None and state:
            self.sparsity.load_state_dict(state)
