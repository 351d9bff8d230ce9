"""Optimiser parameter groups and the learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_TYPES = (nn.LayerNorm, nn.Embedding)


def parameter_groups(model: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float,
                     weight_decay: float) -> list[dict]:
    """Four groups: {backbone, new modules} x {decayed, not decayed}. The backbone (CLIP towers, with
    ``logit_scale`` as in the reference) trains at ``lr * backbone_lr_scale``; biases, norms and
    embeddings get no weight decay. Frozen parameters are left out."""
    backbone_ids = {id(p) for p in backbone.parameters()}
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_TYPES) for p in m.parameters(recurse=False)}
    groups: dict[tuple[bool, bool], list] = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = not (name.endswith("bias") or id(p) in no_decay_ids or p.ndim == 0 or name.endswith("class_embedding"))
        groups[(id(p) in backbone_ids, decay)].append(p)
    return [
        {"params": params, "lr": lr * backbone_lr_scale if is_backbone else lr, "weight_decay": weight_decay if decay else 0.0,
         "name": f"{'backbone' if is_backbone else 'new'}{'' if decay else '_no_decay'}"}
        for (is_backbone, decay), params in groups.items() if params
    ]


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


def build_optimizer(groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=betas, eps=eps)
