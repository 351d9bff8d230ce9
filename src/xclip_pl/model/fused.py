"""The fused CPU path of :meth:`MultiGrainedSimilarity.blockwise` (no gradients): which AOSM
implementation runs, and the block loop around the C++ kernel (``kernels/aosm_cpu.cpp``, loaded by
:mod:`xclip_pl.model.cpu_kernel`). Same values as the torch path up to float rounding."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from .features import VideoFeatures

if TYPE_CHECKING:
    from .similarity import MultiGrainedSimilarity, PreparedText, PreparedVideo

Kernel = Literal["auto", "torch", "fused"]


def select_kernel(kernel: Kernel, like: Tensor, fast: bool):
    """The compiled CPU kernel module when ``kernel`` asks for it and it can run, else ``None``."""
    if kernel not in ("auto", "torch", "fused"):
        raise ValueError(f"kernel must be 'auto', 'torch' or 'fused', got {kernel!r}")
    if kernel == "torch" or (kernel == "auto" and (like.device.type != "cpu" or not fast or like.dtype == torch.float64)):
        return None
    if kernel == "fused":
        if like.device.type != "cpu" or not fast:
            raise ValueError("kernel='fused' runs on CPU features without gradients (wrap the call in torch.no_grad()); "
                             "use kernel='auto' or 'torch' elsewhere")
        if like.dtype == torch.float64:
            raise ValueError("kernel='fused' takes float32, bfloat16 or float16 features, not float64")
    from . import cpu_kernel

    module = cpu_kernel.load()
    if module is None and kernel == "fused":
        raise RuntimeError(f"kernel='fused': the CPU kernel could not be built ({cpu_kernel.build_error()}); "
                           "install a C++ compiler and ninja, or use kernel='torch'")
    return module


def fused_blockwise(module, head: MultiGrainedSimilarity, text: PreparedText, video: VideoFeatures,
                     mix: tuple[Tensor | None, ...], logit_scale: Tensor, ta: int, tb: int, local_on_video: bool) -> Tensor:
    """:meth:`MultiGrainedSimilarity.blockwise` without gradients on CPU with the fused kernel. Per video
    block, the three coarse terms are computed for every text at once (in chunks of ``ta * frames``
    texts, as many elements as one frame-word block), then the frame-word term block by block."""
    a, b, frames = len(text), len(video), video.frame_emb.shape[1]
    tau = head.temperature
    scale = logit_scale.float().exp() * 0.25
    out = torch.empty(a, b, dtype=torch.float32)
    chunk = ta * frames
    for j in range(0, b, tb):
        video_block = head.prepare_video(video[j : j + tb], local=local_on_video)
        for i0 in range(0, a, chunk):
            out[i0 : i0 + chunk, j : j + tb] = _coarse(module, text[i0 : i0 + chunk], video_block, mix, tau)
        for i in range(0, a, ta):
            fine = _frame_word(module, text[i : i + ta], video_block, mix)
            out[i : i + ta, j : j + tb].add_(fine, alpha=tau).mul_(scale)
    return out


def _coarse(module, text: PreparedText, video: PreparedVideo, mix: tuple[Tensor | None, ...], tau: float) -> Tensor:
    """Video-sentence + tau * (video-word + sentence-frame) [a, b], fp32, AOSM in the fused kernel."""
    a, w, d = text.word.shape
    b = video.video.shape[0]
    f = video.frame.shape[0] // b
    inv_tau = 1.0 / tau
    video_sentence = (text.sentence_global @ video.video.t()).float()  # [a, b], fp32 for half types
    word_video = (text.word.reshape(a * w, d) @ video.video.t()).view(a, w, b)  # features' dtype; 1/tau on load
    video_word = module.axis_aosm(word_video, mix[0], text.word_mask, None, inv_tau)
    sent_frame = (text.sentence @ video.frame.t()).view(a, f, b)
    sentence_frame = module.axis_aosm(sent_frame, mix[1], None, video.frame_mask, inv_tau)
    return video_sentence.add_(video_word.add_(sentence_frame), alpha=tau)


def _frame_word(module, text: PreparedText, video: PreparedVideo, mix: tuple[Tensor | None, ...]) -> Tensor:
    """Two-level frame-word AOSM [a, b] in 1/tau units: one GEMM, then the fused kernel."""
    a, w, d = text.word_local.shape
    b = video.video.shape[0]
    fine = (text.word_local.reshape(a * w, d) @ video.frame_local.t()).view(a, w, -1, b)  # M / tau: [a, w, f, b]
    return module.frame_word(fine, *mix[2:], text.word_mask, video.frame_mask)
