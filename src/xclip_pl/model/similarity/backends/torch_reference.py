"""The ``torch`` similarity backend: tensor ops on any device, with gradients; the readable reference
every other backend is tested against.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.

Each AOSM reduction ``sum_i (softmax(s / tau) @ W)_i * s_i`` is computed as ``sum_m p_m (W s)_m``: the
mixing is a matmul on the *scores* (``W @ S`` along the reduced axis, one batched GEMM with the small W
as the left operand). The frame-word scores of a block are laid out ``[a, w, f, b]``, so both level-1
reductions run over a non-innermost axis with the videos contiguous. Without gradients the softmax
weights are consumed in place and exact identity mixes are skipped (``None``); with gradients the same
maths runs out of place. Half-precision features keep the frame-word scores and their mixes in their
dtype; softmax statistics, sums and the logits are fp32.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch
from torch import Tensor

from xclip_pl.model.similarity.backends.base import BlockLogits, Mixes, SimilarityBackend
from xclip_pl.model.similarity.prepared import (
    PreparedText,
    PreparedVideo,
    accumulation_dtype,
    coarse_scores,
    frame_word_scores,
    upcast,
)


def _mix(mat: Tensor | None, scores: Tensor, dim: int) -> Tensor:
    """``mat @ scores`` along axis ``dim`` (the mixed scores ``W s``) of a contiguous tensor, as one
    batched GEMM ``[n, n] @ [lead, n, trail]``; ``None`` is the identity."""
    if mat is None:
        return scores
    shape = scores.shape
    lead = math.prod(shape[:dim])
    return torch.matmul(mat, scores.reshape(lead, shape[dim], -1)).view(shape)


def aosm(scores: Tensor, mat: Tensor | None, dim: int, keep: Tensor | None, fast: bool) -> Tensor:
    """AOSM of already ``1/tau``-scaled ``scores`` along ``dim``: ``sum_m softmax(s)_m (W s)_m`` (fp32, in
    the same scaled units). ``keep`` (bool, broadcastable) drops positions from the softmax and the sum."""
    if keep is not None:
        mixed = _mix(mat, scores.masked_fill(~keep, 0.0), dim)
        logits = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    else:
        mixed, logits = _mix(mat, scores, dim), scores
    if not fast:  # differentiable: plain softmax, out of place
        return (torch.softmax(upcast(logits), dim) * upcast(mixed)).sum(dim)
    weights = torch.softmax(logits, dim, dtype=accumulation_dtype(logits.dtype))
    del logits
    return weights.mul_(mixed).sum(dim)


def frame_word_aosm(fine: Tensor, word_mask: Tensor | None, frame_mask: Tensor | None, mix: Mixes,
                    fast: bool) -> Tensor:
    """Two-level AOSM frame-word score [a, b] in ``1/tau`` units of the scores ``fine`` [a, w, f, b];
    masks [a, w] / [f, b] or None; ``mix`` = (W_w1, W_f1, W_f2, W_w2)."""
    a, w, f, b = fine.shape
    w1, f1, f2, w2 = mix
    per_frame = aosm(fine, w1, 1, None if word_mask is None else word_mask.view(a, w, 1, 1), fast)  # u [a, f, b]
    per_word = aosm(fine, f1, 2, None if frame_mask is None else frame_mask.view(1, 1, f, b), fast)  # z [a, w, b]
    del fine
    over_frames = aosm(per_frame, f2, 1, None if frame_mask is None else frame_mask.view(1, f, b), fast)  # [a, b]
    over_words = aosm(per_word, w2, 1, None if word_mask is None else word_mask.view(a, w, 1), fast)  # [a, b]
    return (over_frames + over_words) * 0.5


def torch_block_logits(coarse: Tensor | None, text: PreparedText, video: PreparedVideo, mix: Mixes,
                       logit_scale: Tensor, temperature: float, fast: bool) -> Tensor:
    """Logits [a, b] of one block (at least fp32); ``coarse`` is unused (always ``None`` here).
    ``mix`` = (W_wl, W_fl, W_w1, W_f1, W_f2, W_w2)."""
    a, w, _ = text.word.shape
    b, f = len(video), video.frames
    inv_tau = 1.0 / temperature
    scores = coarse_scores(text, video)
    video_sentence = upcast(scores.video_sentence)  # [a, b]
    word_video = upcast(scores.word_video) * inv_tau  # [a, w, b]
    video_word = aosm(word_video, mix[0], 1, None if text.word_mask is None else text.word_mask.view(a, w, 1), fast)
    sent_frame = upcast(scores.sentence_frame) * inv_tau  # [a, f, b]
    frame_keep = None if video.frame_mask is None else video.frame_mask.view(1, f, b)
    sentence_frame = aosm(sent_frame, mix[1], 1, frame_keep, fast)
    frame_word = frame_word_aosm(frame_word_scores(text, video), text.word_mask, video.frame_mask, mix[2:], fast)
    scale = logit_scale.to(video_sentence.dtype).exp() * 0.25
    return scale * (video_sentence + temperature * (video_word + sentence_frame + frame_word))


def with_recompile_limit(fn: Callable[..., Any], limit: int) -> Callable[..., Any]:
    """``fn`` (a ``torch.compile``d function) run with dynamo's per-function recompile limit raised to at
    least ``limit`` for the duration of each call only (beyond the limit dynamo silently runs eager)."""
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with dynamo_config.patch(**{name: max(limit, getattr(dynamo_config, name))}):
            return fn(*args, **kwargs)

    return run


class TorchBackend(SimilarityBackend):
    """Tensor ops (:func:`torch_block_logits`): any device and dtype, gradients.

    Args:
        recompile_limit: dynamo recompiles allowed for the compiled block function (each block shape,
            dtype and mask setting is its own static graph; several evaluation sizes in one process stay
            compiled). Applied around its calls only, never to the process's dynamo configuration.
    """

    name = "torch"
    kernel_mixes = False
    differentiable = True
    compilable = True

    def __init__(self, recompile_limit: int = 64) -> None:
        self.recompile_limit = recompile_limit
        self._compiled: BlockLogits | None = None

    def bytes_per_element(self, dtype: torch.dtype, mask_padding: bool) -> int:
        """The scores and the mixed scores in the features' dtype plus the fp32 exponentials (plus two
        masked copies with masks)."""
        size = dtype.itemsize
        return 2 * size + max(4, size) + (2 * size if mask_padding else 0)

    def block_logits(self, coarse: Tensor | None, text: PreparedText, video: PreparedVideo, mix: Mixes,
                     logit_scale: Tensor, temperature: float, fast: bool) -> Tensor:
        return torch_block_logits(coarse, text, video, mix, logit_scale, temperature, fast)

    def compiled_block_logits(self) -> BlockLogits:
        """``torch.compile(dynamic=False)`` of :func:`torch_block_logits`, created on first use."""
        if self._compiled is None:
            self._compiled = with_recompile_limit(torch.compile(torch_block_logits, dynamic=False), self.recompile_limit)
        return self._compiled
