"""Collectives used by the LightningModule (the only place that knows about several processes)."""
from __future__ import annotations

from dataclasses import fields
from functools import partial
from typing import Callable, Literal

import torch
import torch.distributed as dist
from torch import Tensor

from xclip_pl.model.features import TextFeatures, VideoFeatures

GatherGrad = Literal["sum", "local_slice"]


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherSumGrad(torch.autograd.Function):
    """all_gather whose backward sums the incoming gradients over ranks and returns this rank's slice.

    Written out because ``torch.distributed.nn.functional.all_gather`` emulates reduce-scatter with an
    all-to-all on gloo that returns wrong gradients for non-contiguous incoming gradients.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        rank, size = world()
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        rank, size = world()
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        local = grad.shape[0] // size
        return grad[rank * local : (rank + 1) * local]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` [m, ...] from every rank in rank order; the backward sums gradients over ranks
    (so after DDP's averaging every parameter gets the single-process gradient of the global loss)."""
    if world()[1] == 1:
        return x
    if not x.is_floating_point():
        return all_gather_no_grad(x)
    return _AllGatherSumGrad.apply(x)


def all_gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank (no gradient). Bool tensors travel as uint8 (gloo has no bool)."""
    if world()[1] == 1:
        return x
    is_bool = x.dtype == torch.bool
    src = x.to(torch.uint8) if is_bool else x.contiguous()
    parts = [torch.empty_like(src) for _ in range(world()[1])]
    dist.all_gather(parts, src)
    out = torch.cat(parts, 0)
    return out.bool() if is_bool else out


def gather_features(feats: TextFeatures | VideoFeatures, grad: bool = True) -> TextFeatures | VideoFeatures:
    """All-gather every tensor of a feature container (equal local sizes on every rank)."""
    gather = all_gather_with_grad if grad else all_gather_no_grad
    return type(feats)(*(gather(getattr(feats, f.name)) for f in fields(feats)))


def all_gather_uneven(x: Tensor) -> Tensor:
    """Concatenate ``x`` [m_rank, ...] from every rank when ranks hold different numbers of rows."""
    if world()[1] == 1:
        return x
    sizes = all_gather_no_grad(torch.tensor([x.shape[0]], device=x.device))
    longest = int(sizes.max())
    padded = torch.zeros((longest, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x
    parts = all_gather_no_grad(padded).split(longest)
    return torch.cat([part[:n] for part, n in zip(parts, sizes.tolist())])


# ---------------------------------------------------------------- the reference's local-slice gather
class LocalSliceAllGather(torch.autograd.Function):
    """Switch ``gather_grad: Literal["sum", "local_slice"]`` (reference "local_slice"; improved "sum",
    :func:`all_gather_with_grad`).

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
    """The ``gather`` argument of :func:`xclip_pl.train.loss.contrastive_loss` for switch ``gather_grad``
    (``reference_devices``: switch ``gather_grad_devices``, used with ``local_slice`` only)."""
    if gather_grad == "sum":
        return gather_features
    if gather_grad == "local_slice":
        if reference_devices is None:
            return gather_features_local_grad
        return partial(gather_features_local_grad, reference_devices=reference_devices)
    raise ValueError(f"gather_grad={gather_grad!r}: expected 'sum' (exact full-batch gradients) or 'local_slice' (reference)")
