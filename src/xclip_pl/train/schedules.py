"""Learning-rate schedules: ``LambdaLR`` classes that ``model.scheduler`` names (class_path / init_args) and
their multipliers. :class:`WarmupCosine` (the default: warmup, then a renormalised cosine) and
:class:`ReferenceWarmupCosine` (the reference's warmup-cosine over global progress, xclip-method.md 5.3).

The module calls the configured class as ``scheduler(optimizer, total_steps=N)`` with
``N = trainer.estimated_stepping_batches`` (:class:`SchedulerCallable`), and steps it every optimiser step.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler


class SchedulerCallable(Protocol):
    """What ``model.scheduler`` names: an LR scheduler class whose first argument is the optimizer and which
    takes ``total_steps`` (the number of optimiser steps of the run, passed by the module, so it is not a
    config key); its other arguments are the config's ``init_args``. ``torch.optim.lr_scheduler.OneCycleLR``
    fits too. ``pytorch_lightning.cli.LRSchedulerCallable`` cannot be used: jsonargparse would make
    ``total_steps`` a required config key."""

    def __call__(self, optimizer: Optimizer, /, total_steps: int) -> LRScheduler: ...


def warmup_cosine(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR`` (:class:`WarmupCosine`): linear warmup from 0 over
    ``round(warmup_ratio * total_steps)`` steps (at least one when ``warmup_ratio > 0``), then a cosine to 0
    over the remaining steps. ``warmup_ratio: 0`` has no warmup: the first step runs at the full lr."""
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"model.scheduler.init_args.warmup_ratio={warmup_ratio}: expected a fraction of the training "
                         "steps in [0, 1] (paper: 0.1; 0 = no warmup)")
    warmup = max(1, int(round(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def reference_warmup_cosine(total_steps: float, warmup_ratio: float) -> Callable[[int], float]:
    """Multiplier for ``LambdaLR`` (:class:`ReferenceWarmupCosine`).

    CLIP4Clip's ``warmup_cosine`` for ``LambdaLR``: ``x = step / total_steps`` with ``step`` = updates already
    applied (the first update has lr 0); ``x / warmup_ratio`` while ``x < warmup_ratio``, else
    ``0.5 * (1 + cos(pi * x))`` over *global* progress, not renormalised (at x = 0.1 it jumps from ~1.0 to
    0.9755; 0 at x = 1). ``total_steps`` = steps per epoch x epochs (the reference's float division when
    accumulating gradients is allowed). x is capped at 1 (the reference never runs past its total).
    """
    if total_steps <= 0:
        raise ValueError(f"reference_warmup_cosine: total_steps={total_steps} must be > 0 (steps per epoch x epochs)")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"reference_warmup_cosine: warmup_ratio={warmup_ratio} must be in [0, 1) (reference 0.1)")

    def factor(step: int) -> float:
        x = min(step / total_steps, 1.0)
        if x < warmup_ratio:
            return x / warmup_ratio
        return 0.5 * (1.0 + math.cos(math.pi * x))

    return factor


class WarmupCosine(LambdaLR):
    """Warmup, then a cosine renormalised to the remaining steps (the default ``model.scheduler``).

    Improved; the reference's is :class:`ReferenceWarmupCosine`. Linear warmup from 0 over
    ``round(warmup_ratio * total_steps)`` steps, then a cosine to 0 over the remaining steps (:func:`warmup_cosine`).

    Args:
        optimizer: the optimizer whose group learning rates are scaled.
        total_steps: optimiser steps of the run (passed by the module: ``trainer.estimated_stepping_batches``).
        warmup_ratio: fraction of the steps with linear warmup before the cosine decay (paper: 0.1); 0 = no
            warmup, the first step at the full lr.
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.1) -> None:
        self.total_steps, self.warmup_ratio = total_steps, warmup_ratio
        super().__init__(optimizer, warmup_cosine(total_steps, warmup_ratio))


class ReferenceWarmupCosine(LambdaLR):
    """The reference's warmup-cosine over global progress (switch ``model.scheduler``).

    Reference; improved: :class:`WarmupCosine`, the cosine renormalised after warmup. Warmup, then
    ``0.5 * (1 + cos(pi * step / total_steps))`` over global progress, not renormalised, the first update at
    lr 0 (:func:`reference_warmup_cosine`).

    Args:
        optimizer: the optimizer whose group learning rates are scaled.
        total_steps: optimiser steps of the run (passed by the module: ``trainer.estimated_stepping_batches``).
        warmup_ratio: fraction of the steps with linear warmup (reference: 0.1), in [0, 1).
    """

    def __init__(self, optimizer: Optimizer, total_steps: int, warmup_ratio: float = 0.1) -> None:
        self.total_steps, self.warmup_ratio = total_steps, warmup_ratio
        super().__init__(optimizer, reference_warmup_cosine(total_steps, warmup_ratio))
