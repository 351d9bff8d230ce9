"""Switch ``model.optimizer.class_path: xclip_pl.train.bertadam.BertAdam``: CLIP4Clip's BertAdam (xclip-method.md 5.2)."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


class BertAdam(torch.optim.Optimizer):
    """The reference's optimiser, CLIP4Clip's BertAdam (switch ``model.optimizer``).

    Reference: this class; improved: :class:`xclip_pl.train.optim.AdamW`, the bias-corrected
    ``torch.optim.AdamW`` with the same betas, eps and decoupled decay.

    CLIP4Clip's ``modules/optimization.py`` BertAdam (xclip-method.md 5.2), per parameter with a gradient:
    clip that tensor's gradient to norm ``max_grad_norm`` (``clip_grad_norm_`` on the one tensor; <= 0 turns
    it off); ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``; ``update = m / (sqrt(v) + eps)``;
    ``update += wd * p`` when wd > 0; ``p -= lr * update``; ``step += 1``. No bias correction. State
    (``next_m``, ``next_v``) has the parameter's dtype (fp16 for pure-fp16 CLIP tensors). The reference
    multiplies lr by ``warmup_cosine(step / t_total)`` inside the optimiser with a per-parameter step; here
    the schedule is an LR scheduler (:class:`~xclip_pl.train.schedules.ReferenceWarmupCosine`) and
    ``group["lr"]`` is used as given. Parameters whose ``grad`` is None are skipped (frozen ones never get state).

    Args:
        params: parameters or parameter groups (the module passes its groups, each with its lr and decay).
        lr: default learning rate of groups without one.
        betas: Adam betas (paper: 0.9, 0.98).
        eps: Adam epsilon (paper: 1e-6).
        weight_decay: default decoupled weight decay of groups without one.
        max_grad_norm: per-tensor gradient clip norm (reference: 1.0); <= 0 turns it off.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.01, max_grad_norm: float = 1.0) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"BertAdam: lr={lr}, eps={eps}, weight_decay={weight_decay} must be >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"BertAdam: betas={betas} must be in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update of every parameter with a gradient (``closure`` re-evaluates the loss, as Lightning passes it)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict) -> None:
        """The reference update of one tensor, op for op (so fp16 rounding matches too)."""
        if p.grad.is_sparse:
            raise RuntimeError("BertAdam does not support sparse gradients")
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["next_m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["next_v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"], foreach=False)
        grad, (beta1, beta2) = p.grad, group["betas"]
        next_m, next_v = state["next_m"], state["next_v"]
        next_m.mul_(beta1).add_(grad, alpha=1 - beta1)
        next_v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        update = next_m / (next_v.sqrt() + group["eps"])
        if group["weight_decay"] > 0.0:
            update += group["weight_decay"] * p
        p.add_(-(group["lr"] * update))
        state["step"] += 1
