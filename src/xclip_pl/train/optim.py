"""Optimiser parameter groups (the ``no_decay`` policies) and the optimizer classes ``model.optimizer`` names.

The module builds the groups (``lr`` / ``lr * backbone_lr_scale``, ``weight_decay`` or 0) and calls the
configured optimizer class as ``optimizer(groups, lr=lr, weight_decay=weight_decay)``
(:class:`OptimizerCallable`); every group sets its own lr and decay, so those two are not config keys of
the optimizer.
"""
from __future__ import annotations

from typing import Iterable, Literal, Protocol

import torch
from torch import nn
from torch.optim import Optimizer

NoDecay = Literal["bias", "bias_norm_embedding"]

NO_DECAY_TYPES = (nn.LayerNorm, nn.Embedding)


class OptimizerCallable(Protocol):
    """What ``model.optimizer`` names: an optimizer class called with the parameter groups, ``lr`` and
    ``weight_decay`` (both set per group by the module); its other arguments are the config's ``init_args``.
    Any ``torch.optim`` optimizer fits, and :class:`~xclip_pl.train.bertadam.BertAdam`. Unlike
    ``pytorch_lightning.cli.OptimizerCallable`` (which it otherwise mirrors), ``lr`` and ``weight_decay`` are
    not config keys: they would show values that the groups override."""

    def __call__(self, params: Iterable, /, lr: float, weight_decay: float) -> Optimizer: ...


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` with X-CLIP's betas and eps as defaults (the default ``model.optimizer``).

    Improved (bias-corrected, decoupled decay); the reference's is :class:`~xclip_pl.train.bertadam.BertAdam`.

    Args:
        params: parameter groups (built by the module).
        lr: default learning rate (every group built by the module sets its own).
        betas: Adam betas (paper: 0.9, 0.98).
        eps: Adam epsilon (paper: 1e-6).
        weight_decay: default decoupled weight decay (every group built by the module sets its own).
        fused: torch's fused implementation (one kernel per step for all parameters; same update to float
            rounding); None: torch's default choice.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.01, fused: bool | None = None) -> None:
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)
        # torch marks the fused step as unscaling AMP gradients itself; Lightning then refuses gradient clipping
        # under any mixed precision (bf16 has no scaler at all). Unmarked, a 16-mixed GradScaler unscales before
        # the step as for the unfused optimizer, so clipping sees true gradients and the update is the same.
        self._step_supports_amp_scaling = False


def make_parameter_groups(model: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float, weight_decay: float,
                          no_decay: NoDecay) -> list[dict]:
    """The groups of policy ``no_decay``: ``bias`` (:func:`reference_parameter_groups`) or
    ``bias_norm_embedding`` (:func:`parameter_groups`)."""
    make = reference_parameter_groups if no_decay == "bias" else parameter_groups
    return make(model, backbone, lr, backbone_lr_scale, weight_decay)


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


def reference_parameter_groups(model: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float,
                               weight_decay: float) -> list[dict]:
    """Switch ``model.no_decay: Literal["bias", "bias_norm_embedding"]`` (reference "bias"; improved
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
