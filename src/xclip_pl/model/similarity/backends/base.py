"""What a similarity backend is: the per-block AOSM maths that :func:`..tiling.tiled_logits` calls.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames.

The tiling loop owns the blocks; a backend computes one block's logits from the prepared inputs
(:mod:`..prepared`). A backend may also compute the coarse terms of several blocks of texts at once
(:meth:`SimilarityBackend.coarse` over :meth:`~SimilarityBackend.coarse_texts` texts), which the loop
then hands back to :meth:`~SimilarityBackend.block_logits` a block's rows at a time.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from xclip_pl.model.similarity.prepared import FrameLayout, PreparedText, PreparedVideo

#: The six mixing matrices (W_wl, W_fl, W_w1, W_f1, W_f2, W_w2), ``None`` for an identity skipped without
#: gradients (:meth:`MultiGrainedSimilarity.mixing_matrices`).
Mixes = tuple[Tensor | None, ...]

#: ``block_logits(coarse, text, video, mix, logit_scale, temperature, fast) -> [a, b]``
BlockLogits = Callable[[Tensor | None, PreparedText, PreparedVideo, Any, Tensor, float, bool], Tensor]


class SimilarityBackend:
    """One implementation of the block maths, registered by :attr:`name` in ``SIMILARITY_BACKENDS``.

    Every backend returns the logits ``exp(logit_scale) / 4 * (S_vs + S_vw + S_sf + S_fw)`` of the torch
    reference (:mod:`.torch_reference`) up to float rounding, at least fp32.
    """

    #: registry key
    name: str = ""
    #: how :meth:`MultiGrainedSimilarity.prepare_video` stacks the frames for this backend's GEMMs
    frame_layout: FrameLayout = "frames_first"
    #: mixing matrices in fp32 (kernels), else in the features' dtype for the frame-word level-1 mixes
    kernel_mixes: bool = True
    #: gives gradients (the others run under ``torch.no_grad()`` only)
    differentiable: bool = False
    #: can run its block function through ``torch.compile`` (CUDA, no gradients)
    compilable: bool = False

    def unavailable_reason(self) -> str | None:
        """Why this backend cannot run here (a message for the user), or ``None`` when it can; may build
        or import its kernels on first call."""
        return None

    def bytes_per_element(self, dtype: torch.dtype, mask_padding: bool) -> int:
        """Peak bytes of a no-grad block's temporaries per frame-word element for features of ``dtype``."""
        return dtype.itemsize

    def prepare_mixes(self, mix: Mixes, dtype: torch.dtype, words: int, frames: int) -> Any:
        """The mixing matrices in this backend's form, once per call (default: as they are)."""
        return mix

    def coarse_texts(self, block_texts: int, frames: int) -> int:
        """Texts per :meth:`coarse` call (default: one block's, i.e. the coarse terms come with each block)."""
        return block_texts

    def coarse(self, text: PreparedText, video: PreparedVideo, mix: Any, temperature: float) -> Tensor | None:
        """Partial logits [a, b] of the coarse terms of ``text`` x ``video`` for :meth:`block_logits`, or
        ``None`` when :meth:`block_logits` computes them itself (default)."""
        return None

    def block_logits(self, coarse: Tensor | None, text: PreparedText, video: PreparedVideo, mix: Any,
                     logit_scale: Tensor, temperature: float, fast: bool) -> Tensor:
        """Logits [a, b] of one block (at least fp32). ``coarse``: this block's rows of :meth:`coarse`, or
        ``None``; ``fast``: no gradients are needed."""
        raise NotImplementedError

    def compiled_block_logits(self) -> BlockLogits:
        """:meth:`block_logits` through ``torch.compile`` (backends with :attr:`compilable` only)."""
        raise NotImplementedError(f"the {self.name!r} similarity backend does not compile")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
