"""The ``cpu`` similarity backend: the fused C++ AOSM kernel (``kernels/aosm_cpu.cpp``, built on first use
by :mod:`.cpu_extension`), no gradients, fp32 / bf16 / fp16 features.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames.

The kernel reads a block's frame-word scores once, 16 videos at a time, and computes both level-1 and
both level-2 reductions in registers. The coarse terms are computed for ``frames`` blocks of texts at
once (as many elements as one frame-word block), then each block adds its frame-word term. Same values
as the torch reference up to float rounding.
"""
from __future__ import annotations

from types import ModuleType

from torch import Tensor

from xclip_pl.model.similarity.backends import cpu_extension
from xclip_pl.model.similarity.backends.base import Mixes, SimilarityBackend
from xclip_pl.model.similarity.prepared import PreparedText, PreparedVideo, coarse_scores, frame_word_scores


class CpuKernelBackend(SimilarityBackend):
    """The fused C++ kernel on CPU features (mixing matrices in fp32)."""

    name = "cpu"

    def kernel(self) -> ModuleType:
        """The compiled kernel module (built on first use); an error where it cannot be built."""
        module = cpu_extension.load()
        if module is None:
            raise RuntimeError(self.unavailable_reason())
        return module

    def unavailable_reason(self) -> str | None:
        if cpu_extension.load() is not None:
            return None
        return (f"kernel='fused': the CPU kernel could not be built ({cpu_extension.build_error()}); "
                "install a C++ compiler and ninja, or use kernel='torch'")

    def coarse_texts(self, block_texts: int, frames: int) -> int:
        return block_texts * frames

    def coarse(self, text: PreparedText, video: PreparedVideo, mix: Mixes, temperature: float) -> Tensor:
        """Video-sentence + tau * (video-word + sentence-frame) [a, b], fp32, AOSM in the fused kernel."""
        module = self.kernel()
        inv_tau = 1.0 / temperature
        scores = coarse_scores(text, video)  # features' dtype; 1/tau applied on load by the kernel
        video_sentence = scores.video_sentence.float()  # [a, b], fp32 for half types
        video_word = module.axis_aosm(scores.word_video, mix[0], text.word_mask, None, inv_tau)
        sentence_frame = module.axis_aosm(scores.sentence_frame, mix[1], None, video.frame_mask, inv_tau)
        return video_sentence.add_(video_word.add_(sentence_frame), alpha=temperature)

    def block_logits(self, coarse: Tensor | None, text: PreparedText, video: PreparedVideo, mix: Mixes,
                     logit_scale: Tensor, temperature: float, fast: bool) -> Tensor:
        """``coarse`` (this block's rows of :meth:`coarse`, updated in place) plus the two-level
        frame-word term of the fused kernel, times ``exp(logit_scale) / 4``."""
        if coarse is None:
            coarse = self.coarse(text, video, mix, temperature)
        fine = frame_word_scores(text, video)  # M / tau: [a, w, f, b]
        frame_word = self.kernel().frame_word(fine, *mix[2:], text.word_mask, video.frame_mask)  # [a, b], 1/tau units
        scale = logit_scale.float().exp() * 0.25
        return coarse.add_(frame_word, alpha=temperature).mul_(scale)
