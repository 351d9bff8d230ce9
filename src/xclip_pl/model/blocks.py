"""How :meth:`MultiGrainedSimilarity.blockwise` tiles texts x videos: default block budgets per device and
path, and the block shape for a budget."""
from __future__ import annotations

import math

from torch import Tensor

#: Default frame-word elements per block on CUDA (about 3 GiB of temporaries for fp32 features, 2 GiB
#: for bf16: large blocks keep the GPU from being launch-bound, benchmarks/RESULTS.md) and on CPU,
#: where blocks that stay closer to the caches are faster.
DEFAULT_BLOCK_ELEMENTS = 1 << 28
DEFAULT_CPU_BLOCK_ELEMENTS = 1 << 20
#: Default block on CPU with the fused kernel, which reads each block's scores once (16 MiB for bf16).
DEFAULT_FUSED_BLOCK_ELEMENTS = 1 << 23


def default_block_elements(like: Tensor, fused: bool) -> int:
    """Default frame-word elements per block for features like ``like``: CUDA, fused CPU kernel, or
    torch ops on CPU."""
    if like.is_cuda:
        return DEFAULT_BLOCK_ELEMENTS
    return DEFAULT_FUSED_BLOCK_ELEMENTS if fused else DEFAULT_CPU_BLOCK_ELEMENTS


def block_sizes(a: int, b: int, words: int, frames: int, max_elements: int) -> tuple[int, int]:
    """Texts and videos per block so that a block holds at most ``max_elements`` frame-word elements
    (``texts * videos * words * frames``), shaped so that the frame-word GEMM is square-ish
    (``texts * words ~ videos * frames``: the most work per byte read) with the videos per block, the
    contiguous axis of every reduction, a multiple of 16 where possible."""
    pairs = max(1, max_elements // (words * frames))
    ta = max(1, min(a, round(math.sqrt(max_elements) / words)))
    tb = max(1, min(b, pairs // ta))
    if tb < b and tb >= 32:
        tb -= tb % 16
    if tb == b:  # every video fits: spend the rest of the budget on texts
        ta = max(1, min(a, pairs // b))
    return ta, tb
