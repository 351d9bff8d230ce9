"""Optimiser parameter groups and the learning-rate schedule."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NoDecay = Literal["bias", "bias_norm_embedding"]
OptimizerName = Literal["bertadam", "adamw"]

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


def build_optimizer(groups: list[dict], betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, betas=betas, eps=eps)


def reference_parameter_groups(model: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float,
                               weight_decay: float) -> list[dict]:
    """Switch ``no_decay: Literal["bias", "bias_norm_embedding"]`` (reference "bias"; improved
    "bias_norm_embedding", :func:`xclip_pl.train.optim.parameter_groups`).

    The reference's grouping (xclip-method.md 5.1): only parameters whose name contains ``bias`` get no
    weight decay (its ``LayerNorm.*`` patterns never match), so LayerNorm weights, embeddings, ``logit_scale``
    and the AOSM matrices are decayed. The backbone (every parameter of ``backbone``, the CLIP model, with
    ``logit_scale``) trains at ``lr * backbone_lr_scale``, everything else at ``lr``. Frozen parameters are
    left out (BertAdam would skip them anyway). Same format as ``parameter_groups``: dicts with
    ``params``, ``lr``, ``weight_decay`` and ``name`` (backbone, new, backbone_no_decay, new_no_decay).
    """
    backbone_ids = {id(p) for p in backbone.parameters()}
    groups: dict[tuple[bool, bool], list] = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[(id(p) in backbone_ids, "bias" not in name)].append(p)
    return [
        {"params": params, "lr": lr * backbone_lr_scale if is_backbone else lr, "weight_decay": weight_decay if decay else 0.0,
         "name": f"{'backbone' if is_backbone else 'new'}{'' if decay else '_no_decay'}"}
        for (is_backbone, decay), params in groups.items() if params
    ]
