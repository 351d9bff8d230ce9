"""The inputs of one block of the similarity engine, and the score GEMMs every backend shares.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.

The text side is prepared once per call and sliced per block (:class:`PreparedText`); the video side
once per video block (:class:`PreparedVideo`), its frames laid out as the backend's GEMMs want them
(:data:`FrameLayout`). :func:`coarse_scores` and :func:`frame_word_scores` are the score matrices of
the four X-CLIP terms, written once here: the backends differ only in how they reduce them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

#: How a video block's frames are stacked: ``frames_first`` (frame k of video j at row ``k * b + j``: the
#: frame-word scores come out ``[a, w, f, b]``, the videos innermost) or ``videos_first`` (row
#: ``j * f + k``: scores ``[a, w, b, f]``, the layout of the features themselves, no copy).
FrameLayout = Literal["frames_first", "videos_first"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32 for half types, the dtype itself for fp32 / fp64."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def upcast(t: Tensor) -> Tensor:
    """``t`` in its :func:`accumulation_dtype`."""
    return t.to(accumulation_dtype(t.dtype))


@dataclass
class PreparedText:
    """Text-side inputs of the block computation, computed once per similarity call and sliced per block."""

    sentence: Tensor  # [a, d] t
    sentence_global: Tensor  # [a, d] t W_g
    word: Tensor  # [a, w, d] w
    word_local: Tensor  # [a, w, d] w W_loc / tau, or w when the videos carry W_loc (frame_local)
    word_mask: Tensor | None  # [a, w] bool, None when masks are off

    def __len__(self) -> int:
        return self.sentence.shape[0]

    def __getitem__(self, idx: slice) -> "PreparedText":
        return PreparedText(self.sentence[idx], self.sentence_global[idx], self.word[idx], self.word_local[idx],
                            None if self.word_mask is None else self.word_mask[idx])

    def pad_to(self, n: int) -> "PreparedText":
        """Zero-padded to ``n`` texts (masks padded with True), so that every block has one shape."""
        extra = n - len(self)
        if extra <= 0:
            return self

        def pad(t: Tensor, value: float | bool = 0) -> Tensor:
            return torch.cat([t, t.new_full((extra, *t.shape[1:]), value)])

        return PreparedText(pad(self.sentence), pad(self.sentence_global), pad(self.word), pad(self.word_local),
                            None if self.word_mask is None else pad(self.word_mask, True))


@dataclass
class PreparedVideo:
    """Video-side inputs of one block, frames stacked so that the block's GEMMs need no further copy."""

    video: Tensor  # [b, d]
    frame: Tensor  # [(f b), d] or [(b f), d] contiguous, as ``layout`` says
    frame_mask: Tensor | None  # [f, b] bool (a view), None when masks are off
    frame_local: Tensor  # like ``frame``: frame W_loc^T / tau when the videos carry W_loc, else ``frame``
    layout: FrameLayout = "frames_first"

    def __len__(self) -> int:
        return self.video.shape[0]

    @property
    def frames(self) -> int:
        return self.frame.shape[0] // self.video.shape[0]


@dataclass
class CoarseScores:
    """The raw (unscaled, features' dtype) scores of the three coarse terms of a block."""

    video_sentence: Tensor  # [a, b] t W_g v
    word_video: Tensor  # [a, w, b] w . v
    sentence_frame: Tensor  # [a, f, b] t . f (a strided view for videos-first frames)


def coarse_scores(text: PreparedText, video: PreparedVideo) -> CoarseScores:
    """Video-sentence, word-video and sentence-frame scores of a block: three GEMMs."""
    a, w, d = text.word.shape
    b, f = len(video), video.frames
    video_sentence = text.sentence_global @ video.video.t()  # [a, b]
    word_video = (text.word.reshape(a * w, d) @ video.video.t()).view(a, w, b)
    sentence_frame = text.sentence @ video.frame.t()  # [a, (f b)] or [a, (b f)]
    if video.layout == "frames_first":
        sentence_frame = sentence_frame.view(a, f, b)
    else:
        sentence_frame = sentence_frame.view(a, b, f).transpose(1, 2)  # [a, f, b] view
    return CoarseScores(video_sentence, word_video, sentence_frame)


def frame_word_scores(text: PreparedText, video: PreparedVideo) -> Tensor:
    """The frame-word scores ``w W_loc f^T / tau`` of a block as one GEMM ``((a w) d) @ (d (f b))``:
    ``[a, w, f, b]`` for frames-first videos, ``[a, w, b, f]`` for videos-first."""
    a, w, d = text.word_local.shape
    b, f = len(video), video.frames
    fine = text.word_local.reshape(a * w, d) @ video.frame_local.t()  # M / tau: [(a w), (f b)] or [(a w), (b f)]
    return fine.view(a, w, f, b) if video.layout == "frames_first" else fine.view(a, w, b, f)
