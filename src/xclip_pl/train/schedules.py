"""Learning-rate schedules, as ``LambdaLR`` multipliers: ``hf`` (warmup, then a renormalised cosine) and the
reference's warmup-cosine over global progress (xclip-method.md 5.3)."""
from __future__ import annotations

import math
from typing import Callable, Literal

LrSchedule = Literal["reference", "hf"]


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """Multiplier for ``LambdaLR`` (switch ``lr_schedule: hf``): linear warmup from 0 over
    ``round(warmup_ratio * total_steps)`` steps (at least one when ``warmup_ratio > 0``), then a cosine to 0
    over the remaining steps. ``warmup_ratio: 0`` has no warmup: the first step runs at the full lr."""
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"model.warmup_ratio={warmup_ratio}: expected a fraction of the training steps in [0, 1] "
                         "(paper: 0.1; 0 = no warmup)")
    warmup = max(1, int(round(warmup_ratio * total_steps))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor

def reference_warmup_cosine(total_steps: float, warmup_ratio: float) -> Callable[[int], float]:
    """Switch ``lr_schedule: Literal["reference", "hf"]`` (reference "reference"; improved "hf", the cosine
    renormalised after warmup, :func:`warmup_cosine`).

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
