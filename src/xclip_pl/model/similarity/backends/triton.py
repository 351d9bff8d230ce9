"""The ``triton`` similarity backend: the Triton AOSM kernels (:mod:`.triton_kernels`) on CUDA features
without gradients (tests run them on CPU tensors in Triton's interpreter).

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames.

Per block: the three GEMMs in the features' dtype, the frame-word scores laid out ``[a, w, b, f]``
(the frames of a video block stay in the features' own order), then five kernels that add each term
into the block's fp32 logits. Triton is imported on first use only.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

from xclip_pl.model.similarity.backends.base import Mixes, SimilarityBackend
from xclip_pl.model.similarity.prepared import PreparedText, PreparedVideo, coarse_scores, frame_word_scores


@dataclass
class TritonMixes:
    """The six mixing matrices zero-padded to the kernels' power-of-two tiles (``None``: identity), and
    whether the mixes run in exact fp32 (fp32 features, or entries beyond fp16's range)."""

    mats: tuple[Tensor | None, ...]  # (W_wl, W_fl, W_w1, W_f1, W_f2, W_w2)
    fp32: bool


def triton_kernels() -> ModuleType:
    """:mod:`.triton_kernels` (imports Triton)."""
    from xclip_pl.model.similarity.backends import triton_kernels as kernels

    return kernels


class TritonBackend(SimilarityBackend):
    """The Triton kernels; frames videos-first, so a video block needs no frames-first copy."""

    name = "triton"
    frame_layout = "videos_first"

    def unavailable_reason(self) -> str | None:
        try:
            triton_kernels()
        except ImportError as err:
            return f"kernel='fused' on CUDA needs Triton ({err}); install triton or use kernel='torch'"
        return None

    def prepare_mixes(self, mix: Mixes, dtype: torch.dtype, words: int, frames: int) -> TritonMixes:
        kernels = triton_kernels()
        wp, fp = kernels.padded_size(words), kernels.padded_size(frames)
        padded = tuple(kernels.padded_matrix(m, n) for m, n in zip(mix, (wp, fp, wp, fp, fp, wp)))
        return TritonMixes(padded, kernels.use_fp32_mix(mix, dtype))

    def block_logits(self, coarse: Tensor | None, text: PreparedText, video: PreparedVideo, mix: TritonMixes,
                     logit_scale: Tensor, temperature: float, fast: bool) -> Tensor:
        kernels = triton_kernels()
        tau, inv_tau = temperature, 1.0 / temperature
        w_wl, f_fl, w1, f1, f2, w2 = mix.mats
        word_keep = text.word_mask  # [a, w] or None
        frame_keep = None if video.frame_mask is None else video.frame_mask[None]  # [1, f, b] view
        scores = coarse_scores(text, video)
        out = torch.empty(len(text), len(video), dtype=torch.float32, device=text.word.device)
        out.copy_(scores.video_sentence)  # video-sentence
        kernels.axis_aosm(out, scores.word_video, w_wl, None if word_keep is None else word_keep[:, :, None],
                          inv_tau, tau, mix.fp32)
        kernels.axis_aosm(out, scores.sentence_frame, f_fl, frame_keep, inv_tau, tau, mix.fp32)
        fine = frame_word_scores(text, video)  # M / tau: [a, w, b, f]
        video_frame_keep = None if video.frame_mask is None else video.frame_mask.t()  # [b, f], contiguous
        per_frame, per_word = kernels.frame_word_level1(fine, w1, f1, word_keep, video_frame_keep, mix.fp32)
        del fine
        kernels.axis_aosm(out, per_frame, f2, frame_keep, 1.0, 0.5 * tau, mix.fp32)
        kernels.axis_aosm(out, per_word, w2, None if word_keep is None else word_keep[:, :, None], 1.0, 0.5 * tau,
                          mix.fp32)
        return out.mul_(logit_scale.float().exp() * 0.25)
