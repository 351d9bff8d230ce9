"""Collectives used by the LightningModule (the only place that knows about several processes)."""
from __future__ import annotations

from dataclasses import fields

import torch
import torch.distributed as dist
from torch import Tensor

from .model.features import TextFeatures, VideoFeatures


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
