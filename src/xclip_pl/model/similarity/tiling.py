"""The one loop of the similarity engine: texts x videos in blocks, each block computed by a backend.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames.

It owns the block sizes (default budgets per device and backend, a memory budget, or an explicit
``chunk_size``), the per-call preparation (mixing matrices, ``W_g`` and ``W_loc / tau`` applied once
per call on whichever side has fewer rows), the per-video-block preparation of the frames, and the
writing of every block into one [a, b] result. The backends (:mod:`.backends`) own the block maths.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.similarity.backends.base import SimilarityBackend
from xclip_pl.model.similarity.prepared import accumulation_dtype

if TYPE_CHECKING:
    from xclip_pl.model.similarity.head import MultiGrainedSimilarity

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


def choose_block_sizes(a: int, b: int, words: int, frames: int, chunk_size: int | None,
                       memory_budget_mb: float | None, bytes_per_element: int, default_elements: int) -> tuple[int, int]:
    """Texts and videos per block: ``chunk_size`` each; or the largest square-ish GEMM block whose
    frame-word temporaries (``bytes_per_element`` each) fit ``memory_budget_mb``; or blocks of
    ``default_elements`` elements."""
    if chunk_size is not None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return chunk_size, chunk_size
    if memory_budget_mb is not None:
        if memory_budget_mb <= 0:
            raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}")
        max_elements = int(memory_budget_mb * 2**20) // bytes_per_element
    else:
        max_elements = default_elements
    return block_sizes(a, b, words, frames, max_elements)


def plan_blocks(head: MultiGrainedSimilarity, backend: SimilarityBackend, text: TextFeatures, video: VideoFeatures,
                chunk_size: int | None = None, memory_budget_mb: float | None = None) -> tuple[int, int]:
    """:func:`choose_block_sizes` for ``backend`` on these features (its bytes per element, the default
    budget of its device)."""
    like = text.word_emb
    return choose_block_sizes(len(text), len(video), head.max_words, head.max_frames, chunk_size, memory_budget_mb,
                              backend.bytes_per_element(like.dtype, head.mask_padding),
                              default_block_elements(like, backend.name != "torch"))


def tiled_logits(head: MultiGrainedSimilarity, text: TextFeatures, video: VideoFeatures, logit_scale: Tensor,
                 block_texts: int, block_videos: int, backend: SimilarityBackend, compile: bool = False) -> Tensor:
    """Logits [a, b] of ``head`` in blocks of ``block_texts`` x ``block_videos`` pairs, each computed by
    ``backend`` (shapes checked by the caller, :meth:`MultiGrainedSimilarity.blockwise`).

    Without gradients the blocks are written into one preallocated [a, b] result (fp32 for half
    features, else their dtype); with gradients they are concatenated. ``compile`` runs a compilable
    backend's block function through ``torch.compile`` (CUDA, no gradients; ignored otherwise), partial
    blocks zero-padded to the full block shape so that one compiled graph serves every block.
    """
    a, b, frames = len(text), len(video), video.frame_emb.shape[1]
    dtype = text.word_emb.dtype
    if a == 0 or b == 0:
        return text.word_emb.new_zeros(a, b, dtype=accumulation_dtype(dtype))
    ta, tb = max(1, min(block_texts, a)), max(1, min(block_videos, b))
    fast = not torch.is_grad_enabled()
    mix = head.mixing_matrices(torch.float32 if backend.kernel_mixes else dtype, fast)
    mix = backend.prepare_mixes(mix, dtype, head.max_words, head.max_frames)
    local_on_video = b * frames < a * text.word_emb.shape[1]  # W_loc on the fewer rows
    text_in = head.prepare_text(text, local=not local_on_video)
    block_logits, padded = backend.block_logits, False
    if compile and fast and backend.compilable and text.word_emb.is_cuda:
        block_logits, padded = backend.compiled_block_logits(), True
        text_in = text_in.pad_to(-(-a // ta) * ta)
    chunk, tau = backend.coarse_texts(ta, frames), head.temperature
    out = torch.empty(a, b, dtype=accumulation_dtype(dtype), device=text.word_emb.device) if fast else None
    columns = []
    for j in range(0, b, tb):  # videos outside: each video block is laid out once
        video_in = head.prepare_video(video[j : j + tb], pad_to=tb if padded else None, local=local_on_video,
                                      layout=backend.frame_layout)
        column = []
        for c in range(0, a, chunk):
            coarse = backend.coarse(text_in[c : c + chunk], video_in, mix, tau)  # [chunk, tb] or None
            for i in range(c, min(a, c + chunk), ta):
                rows = None if coarse is None else coarse[i - c : i - c + ta]
                block = block_logits(rows, text_in[i : i + ta], video_in, mix, logit_scale, tau, fast)  # [ta, tb]
                if out is None:
                    column.append(block)
                else:
                    out[i : i + ta, j : j + tb] = block[: a - i, : b - j]
        if out is None:
            columns.append(torch.cat(column, 0))
    return torch.cat(columns, 1) if out is None else out
