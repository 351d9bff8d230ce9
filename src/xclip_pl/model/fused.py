"""The fused paths of :meth:`MultiGrainedSimilarity.blockwise` (no gradients): which AOSM
implementation runs, and the block loops around the C++ CPU kernel (``kernels/aosm_cpu.cpp``, loaded
by :mod:`xclip_pl.model.cpu_kernel`) and the Triton GPU kernels (:mod:`xclip_pl.model.triton_kernel`).
Same values as the torch path up to float rounding."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from xclip_pl.model.features import VideoFeatures

if TYPE_CHECKING:
    from xclip_pl.model.similarity import MultiGrainedSimilarity, PreparedText, PreparedVideo

Kernel = Literal["auto", "torch", "fused"]


def select_kernel(kernel: Kernel, like: Tensor, fast: bool):
    """The fused kernel module for features like ``like`` when ``kernel`` asks for it and it can run, else
    ``None``: the C++ module on CPU, :mod:`.triton_kernel` on CUDA. ``auto`` picks the CPU kernel only;
    the Triton kernels run where ``fused`` is asked for (they have not been timed on a GPU yet, so
    ``auto`` keeps the torch path there)."""
    if kernel not in ("auto", "torch", "fused"):
        raise ValueError(f"kernel must be 'auto', 'torch' or 'fused', got {kernel!r}")
    if kernel == "torch" or (kernel == "auto" and (like.device.type != "cpu" or not fast or like.dtype == torch.float64)):
        return None
    if not fast or like.device.type not in ("cpu", "cuda"):
        raise ValueError("kernel='fused' runs on CPU or CUDA features without gradients (wrap the call in "
                         "torch.no_grad()); use kernel='auto' or 'torch' elsewhere")
    if like.dtype == torch.float64:
        raise ValueError("kernel='fused' takes float32, bfloat16 or float16 features, not float64")
    if like.is_cuda:
        try:
            from xclip_pl.model import triton_kernel
        except ImportError as err:
            raise RuntimeError(f"kernel='fused' on CUDA needs Triton ({err}); install triton or use kernel='torch'") from err
        return triton_kernel
    from xclip_pl.model import cpu_kernel

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


def triton_blockwise(module, head: MultiGrainedSimilarity, text: PreparedText, video: VideoFeatures,
                     mix: tuple[Tensor | None, ...], logit_scale: Tensor, ta: int, tb: int, local_on_video: bool) -> Tensor:
    """:meth:`MultiGrainedSimilarity.blockwise` without gradients with the Triton kernels (``module`` is
    :mod:`.triton_kernel`; CUDA, or CPU tensors under Triton's interpreter). Per block: three GEMMs in the
    features' dtype, the frame-word scores laid out [texts, words, videos, frames], then five kernels
    that add each term into the block's fp32 logits."""
    a, b = len(text), len(video)
    words, frames = text.word.shape[1], video.frame_emb.shape[1]
    tau, inv_tau = head.temperature, 1.0 / head.temperature
    scale = logit_scale.float().exp() * 0.25
    fp32_mix = module.use_fp32_mix(mix, text.word.dtype)
    wp, fp = module.padded_size(words), module.padded_size(frames)
    w_wl, f_fl, w1, f1, f2, w2 = (module.padded_matrix(m, n) for m, n in zip(mix, (wp, fp, wp, fp, fp, wp)))
    out = torch.empty(a, b, dtype=torch.float32, device=text.word.device)
    for j in range(0, b, tb):
        block = video[j : j + tb]
        nb = len(block)
        vid, frame = block.video_emb, block.frame_emb.reshape(nb * frames, -1)  # frame k of video v at row v * f + k
        frame_local = head.project_frames(frame) if local_on_video else frame
        frame_keep = block.frame_mask.bool() if head.mask_padding else None  # [b, f]
        for i in range(0, a, ta):
            t = text[i : i + ta]
            na = len(t)
            block_out = out[i : i + ta, j : j + tb]
            block_out.copy_(t.sentence_global @ vid.t())  # video-sentence
            word_keep = t.word_mask  # [a, w] or None
            word_video = (t.word.reshape(na * words, -1) @ vid.t()).view(na, words, nb)
            module.axis_aosm(block_out, word_video, w_wl, None if word_keep is None else word_keep[:, :, None],
                             inv_tau, tau, fp32_mix)
            sent_frame = (t.sentence @ frame.t()).view(na, nb, frames).transpose(1, 2)  # [a, f, b] view
            module.axis_aosm(block_out, sent_frame, f_fl, None if frame_keep is None else frame_keep.t()[None],
                             inv_tau, tau, fp32_mix)
            fine = (t.word_local.reshape(na * words, -1) @ frame_local.t()).view(na, words, nb, frames)  # M / tau
            per_frame, per_word = module.frame_word_level1(fine, w1, f1, word_keep, frame_keep, fp32_mix)
            del fine
            module.axis_aosm(block_out, per_frame, f2, None if frame_keep is None else frame_keep.t()[None],
                             1.0, 0.5 * tau, fp32_mix)
            module.axis_aosm(block_out, per_word, w2, None if word_keep is None else word_keep[:, :, None],
                             1.0, 0.5 * tau, fp32_mix)
            block_out.mul_(scale)
    return out

