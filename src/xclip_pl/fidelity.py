"""The reference (CLIP4Clip / X-CLIP) training recipe as functions the LightningModule selects by switch.

Each piece names its switch, the reference value and the improved value (xclip-method.md 15 and 16):

=================  ===========================  =============================================
switch             reference value              improved value
=================  ===========================  =============================================
``freeze_layers``  ``0`` (embedding stage)      ``-1`` (train everything)
``clip_dtype``     ``"fp16"`` (pure fp16)       ``"fp32"`` (+ Lightning ``bf16-mixed``)
``optimizer``      ``"bertadam"``               ``"adamw"``
``lr_schedule``    ``"reference"``              ``"hf"`` (:func:`xclip_pl.optim.warmup_cosine`)
``no_decay``       ``"bias"``                   ``"bias_norm_embedding"``
``gather_grad``    ``"local_slice"``            ``"sum"``
=================  ===========================  =============================================
"""
from __future__ import annotations

import math
import re
from dataclasses import fields
from functools import partial
from typing import Callable, Iterable, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from transformers import CLIPModel

from .distributed import all_gather_no_grad, gather_features, world
from .model.features import TextFeatures, VideoFeatures

ClipDtype = Literal["fp16", "fp32"]
OptimizerName = Literal["bertadam", "adamw"]
LrSchedule = Literal["reference", "hf"]
NoDecay = Literal["bias", "bias_norm_embedding"]
GatherGrad = Literal["sum", "local_slice"]

# --------------------------------------------------------------------------------------------- freezing
ALWAYS_TRAINABLE = (  # the reference's "top" parameters (official: ln_final, text_projection, logit_scale, visual.ln_post, visual.proj)
    "text_model.final_layer_norm.", "text_projection.", "logit_scale",
    "vision_model.post_layernorm.", "visual_projection.",
)
_LAYER = re.compile(r"^(?:text_model|vision_model)\.encoder\.layers\.(\d+)\.")


def _max_layers(clip: CLIPModel) -> int:
    return max(clip.config.text_config.num_hidden_layers, clip.config.vision_config.num_hidden_layers)


def freeze_clip_layers(clip: CLIPModel, freeze_layers: int) -> list[str]:
    """Switch ``freeze_layers: int`` (reference ``--freeze_layer_num``; reference value 0, improved -1).

    ``-1`` freezes nothing. ``N >= 0`` sets ``requires_grad=False`` on every CLIP parameter except the
    always-trainable top (``final_layer_norm``, ``text_projection``, ``logit_scale``, ``post_layernorm``,
    ``visual_projection``) and the encoder layers with index >= N in both towers. So ``N = 0`` still
    freezes the token and text position embeddings, the patch, class and vision position embeddings and
    ``pre_layrnorm`` (xclip-method.md 5.5). Parameters are only frozen, never unfrozen.
    Returns the names (``CLIPModel`` naming) of the parameters frozen.
    """
    if freeze_layers < -1 or freeze_layers > _max_layers(clip):
        raise ValueError(f"freeze_layers={freeze_layers}: expected -1 (freeze nothing) or 0..{_max_layers(clip)} "
                         f"(freeze the embedding stage and the encoder layers below that index)")
    if freeze_layers == -1:
        return []
    frozen = []
    for name, param in clip.named_parameters():
        if name.startswith(ALWAYS_TRAINABLE):
            continue
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= freeze_layers:
            continue
        param.requires_grad_(False)
        frozen.append(name)
    return frozen


# ------------------------------------------------------------------------------------------ pure fp16
class FP32LayerNorm(nn.LayerNorm):
    """OpenAI's ``LayerNorm``: fp32 parameters, computed in fp32 on the upcast input, cast back to its dtype.

    Same state-dict keys as ``nn.LayerNorm``; :func:`cast_towers_fp16` swaps the class of HF's LayerNorms in place.
    """

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


def _output_to_fp16(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    """Forward hook: OpenAI casts embeddings to the tower dtype (``.type(self.dtype)``) before the blocks."""
    return output.to(torch.float16)


def _half_(module: nn.Module) -> None:
    """Weight and bias of a Linear / Conv to fp16, keeping the ``Parameter`` objects (optimisers may hold them)."""
    for param in (module.weight, getattr(module, "bias", None)):
        if param is not None:
            param.data = param.data.half()


def cast_towers_fp16(clip: CLIPModel) -> None:
    """Switch ``clip_dtype: Literal["fp16", "fp32"]`` (reference "fp16"; improved "fp32" with Lightning
    ``precision="bf16-mixed"`` / ``"16-mixed"``, which needs a re-tuned CLIP lr, ArrowLuo/CLIP4Clip#96).

    The reference's pure-fp16 pattern (OpenAI ``convert_weights``, xclip-method.md 3 and 14), in place:
    every Linear / Conv weight and bias of both towers and the two projections become fp16; LayerNorm
    parameters, the token / position / class embeddings and ``logit_scale`` stay fp32. LayerNorms compute in
    fp32 and cast back (:class:`FP32LayerNorm`); the embedding outputs are cast to fp16 (token and position
    lookups first, so the text sum is OpenAI's fp16 add), so activations, gradients and (with
    :class:`BertAdam`) optimiser state of the fp16 tensors are fp16: no AMP, no loss scaling, no master
    weights. The tower outputs are fp16; the head must cast them to fp32 (``XCLIP`` does). Use with
    Lightning ``precision="32-true"``; "16-true" would cast the fp32 parts too. Idempotent.
    """
    if getattr(clip, "_xclip_pure_fp16", False):
        return
    for tower in (clip.text_model, clip.vision_model):
        for module in tower.modules():
            if type(module) is nn.LayerNorm:
                module.__class__ = FP32LayerNorm
            elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                _half_(module)
    _half_(clip.text_projection)
    _half_(clip.visual_projection)
    text, vision = clip.text_model.embeddings, clip.vision_model.embeddings
    for module in (text.token_embedding, text.position_embedding, text, vision.position_embedding, vision):
        module.register_forward_hook(_output_to_fp16)
    clip._xclip_pure_fp16 = True


# ------------------------------------------------------------------------------------------- BertAdam
class BertAdam(torch.optim.Optimizer):
    """Switch ``optimizer: Literal["bertadam", "adamw"]`` (reference "bertadam"; improved "adamw", the
    bias-corrected ``torch.optim.AdamW`` with the same betas, eps and decoupled decay).

    CLIP4Clip's ``modules/optimization.py`` BertAdam (xclip-method.md 5.2), per parameter with a gradient:
    clip that tensor's gradient to norm ``max_grad_norm`` (``clip_grad_norm_`` on the one tensor; <= 0 turns
    it off); ``m = b1*m + (1-b1)*g``; ``v = b2*v + (1-b2)*g*g``; ``update = m / (sqrt(v) + eps)``;
    ``update += wd * p`` when wd > 0; ``p -= lr * update``; ``step += 1``. No bias correction. State
    (``next_m``, ``next_v``) has the parameter's dtype (fp16 for pure-fp16 CLIP tensors). The reference
    multiplies lr by ``warmup_cosine(step / t_total)`` inside the optimiser with a per-parameter step; here
    the schedule is an LR scheduler (:func:`reference_warmup_cosine`) and ``group["lr"]`` is used as given.
    Parameters whose ``grad`` is None are skipped (frozen ones never get state).
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


# ------------------------------------------------------------------------------------------- schedule
def reference_warmup_cosine(total_steps: float, warmup_ratio: float) -> Callable[[int], float]:
    """Switch ``lr_schedule: Literal["reference", "hf"]`` (reference "reference"; improved "hf", the cosine
    renormalised after warmup, :func:`xclip_pl.optim.warmup_cosine`).

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


# ------------------------------------------------------------------------------------ parameter groups
def reference_parameter_groups(model: nn.Module, backbone: nn.Module, lr: float, backbone_lr_scale: float,
                               weight_decay: float) -> list[dict]:
    """Switch ``no_decay: Literal["bias", "bias_norm_embedding"]`` (reference "bias"; improved
    "bias_norm_embedding", :func:`xclip_pl.optim.parameter_groups`).

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


# ---------------------------------------------------------------------------------------------- gather
class LocalSliceAllGather(torch.autograd.Function):
    """Switch ``gather_grad: Literal["sum", "local_slice"]`` (reference "local_slice"; improved "sum",
    :func:`xclip_pl.distributed.all_gather_with_grad`).

    CLIP4Clip's ``AllGather``: forward concatenates ``x`` [m, ...] from every rank in rank order; backward
    returns only this rank's rows of the incoming gradient, with no reduction over ranks. Under DDP's
    averaging, parameters before the gather then get 1/W of the global-loss gradient, those after it the
    full gradient (xclip-method.md 4). Equal ``m`` on every rank is required.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rank, size = world()
        ctx.rank, ctx.local = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad[ctx.rank * ctx.local : (ctx.rank + 1) * ctx.local]


class ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def all_gather_local_grad(x: Tensor, reference_devices: int | None = None) -> Tensor:
    """Concatenate ``x`` from every rank; the backward keeps this rank's slice only (see :class:`LocalSliceAllGather`).
    Identity in a single process; non-float tensors (masks) are gathered without gradient.

    ``reference_devices`` (R): scale this rank's slice by W / R, so that after DDP's averaging over the W
    ranks the encoders receive 1/R of the global-loss gradient, as the reference code on R GPUs, whatever W.
    """
    size = world()[1]
    if not x.is_floating_point():
        return x if size == 1 else all_gather_no_grad(x)
    if reference_devices is not None and reference_devices != size:
        x = ScaleGrad.apply(x, size / reference_devices)
    return x if size == 1 else LocalSliceAllGather.apply(x)


def gather_features_local_grad(feats: TextFeatures | VideoFeatures,
                               reference_devices: int | None = None) -> TextFeatures | VideoFeatures:
    """Drop-in for ``distributed.gather_features`` with the reference's local-slice backward (``gather_grad="local_slice"``).

    Only the reference's behaviour with the full N x N loss (``local_loss=False``): with ``local_loss=True``
    each rank's loss covers only its own rows, and a local-slice backward then drops the other ranks' terms.
    ``reference_devices``: see :func:`all_gather_local_grad`.
    """
    return type(feats)(*(all_gather_local_grad(getattr(feats, f.name), reference_devices) for f in fields(feats)))


def feature_gather(gather_grad: GatherGrad, reference_devices: int | None = None
                   ) -> Callable[[TextFeatures | VideoFeatures], TextFeatures | VideoFeatures]:
    """The ``gather`` argument of :func:`xclip_pl.loss.contrastive_loss` for switch ``gather_grad``
    (``reference_devices``: switch ``gather_grad_devices``, used with ``local_slice`` only)."""
    if gather_grad == "sum":
        return gather_features
    if gather_grad == "local_slice":
        if reference_devices is None:
            return gather_features_local_grad
        return partial(gather_features_local_grad, reference_devices=reference_devices)
    raise ValueError(f"gather_grad={gather_grad!r}: expected 'sum' (exact full-batch gradients) or 'local_slice' (reference)")
