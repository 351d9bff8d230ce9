"""Triton kernels for X-CLIP's AOSM reductions on the GPU (no autograd): the GPU counterpart of the C++
CPU kernel (``kernels/aosm_cpu.cpp``), with the same maths as the torch reference (:mod:`.torch_reference`):

    aosm(x) = sum_i softmax(x)_i (W x)_i = sum_j x_j (e @ W)_j / sum_i e_i,   e_i = exp(x_i - max x)

with masked positions out of the softmax and the sum; exponentials, sums and reductions in fp32, the
mixes ``e @ W`` on tensor cores (fp16 operands, fp32 accumulation) for half-precision features and in
exact fp32 (``input_precision="ieee"``) for fp32 features.

* :func:`frame_word_level1` reads each text's ``[words, videos, frames]`` tile of the frame-word scores
  once and writes both level-1 reductions (over words per frame, over frames per word).
* :func:`axis_aosm` is one AOSM over the middle axis of an ``[A, N, B]`` tensor of any strides, added
  with a coefficient into an ``[A, B]`` output: the video-word and sentence-frame terms and both
  level-2 reductions of the frame-word term.

This module, and Triton with it, is imported only by the ``triton`` backend (:mod:`.triton`), which
``kernel="fused"`` selects on CUDA features. Tests run these kernels on CPU tensors in Triton's
interpreter (``TRITON_INTERPRET=1`` set before triton is first imported).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Launch configuration (module attributes, so that a GPU benchmark can sweep them): elements of one
#: program's tile (the level-1 kernel holds a few fp32 tensors of this size) and warps per program.
TILE_ELEMENTS = 8192
LEVEL1_WARPS = 8
AXIS_WARPS = 4
#: Largest mixing-matrix entry sent to the tensor cores in fp16 (beyond it the mix runs in fp32).
FP16_MIX_LIMIT = 1.0e4

_LOG2E = tl.constexpr(1.4426950408889634)
_NEG = tl.constexpr(-1.0e30)  # masked logits: exp2((NEG - max) * log2 e) == 0


def padded_size(n: int, floor: int = 16) -> int:
    """Smallest power of two >= n and >= floor (Triton tiles are powers of two; tl.dot needs >= 16)."""
    return max(floor, triton.next_power_of_2(n))


def use_fp32_mix(mats: tuple[Tensor | None, ...], dtype: torch.dtype) -> bool:
    """Exact fp32 mixes for fp32 features, or when a mixing matrix does not fit fp16's range."""
    if dtype == torch.float32:
        return True
    present = [m.detach().abs().max() for m in mats if m is not None]
    return bool(present) and float(torch.stack(present).max()) > FP16_MIX_LIMIT  # one host sync


@triton.jit
def _mix(e, mat_ptr, NP: tl.constexpr, FP32_MIX: tl.constexpr, LEFT: tl.constexpr):
    """The mix of unnormalised softmax weights ``e`` by the mixing matrix W at ``mat_ptr`` ([NP, NP] fp32,
    zero-padded): ``W^T @ e`` for ``e`` [NP, C] when ``LEFT`` (the mixed axis is e's first), else
    ``e @ W`` for ``e`` [R, NP]."""
    rows = tl.arange(0, NP)
    if LEFT:
        lhs, rhs = tl.load(mat_ptr + rows[None, :] * NP + rows[:, None]), e  # W^T
    else:
        lhs, rhs = e, tl.load(mat_ptr + rows[:, None] * NP + rows[None, :])
    if FP32_MIX:
        mixed = tl.dot(lhs, rhs, input_precision="ieee")
    else:
        mixed = tl.dot(lhs.to(tl.float16), rhs.to(tl.float16))
    return mixed


@triton.jit
def _level1_kernel(
    score_ptr, word_keep_ptr, frame_keep_ptr, w1_ptr, f1_ptr, per_frame_ptr, per_word_ptr,
    n_videos, video_blocks,
    WORDS: tl.constexpr, FRAMES: tl.constexpr, WP: tl.constexpr, FP: tl.constexpr, BB: tl.constexpr,
    HAS_WORD_KEEP: tl.constexpr, HAS_FRAME_KEEP: tl.constexpr, HAS_W1: tl.constexpr, HAS_F1: tl.constexpr,
    FP32_MIX: tl.constexpr,
):
    """One text x BB videos. Scores [A, WORDS, B, FRAMES] (contiguous, 1/tau units); writes the AOSM
    over words per frame to per_frame [A, FRAMES, B] and over frames per word to per_word [A, WORDS, B]."""
    pid = tl.program_id(0)
    text = pid // video_blocks
    video = (pid % video_blocks) * BB + tl.arange(0, BB)  # [BB]
    word = tl.arange(0, WP)
    frame = tl.arange(0, FP)
    in_video = video < n_videos
    in_word = word < WORDS
    in_frame = frame < FRAMES
    text64 = text.to(tl.int64)

    w3 = word[:, None, None]
    v3 = video[None, :, None]
    f3 = frame[None, None, :]
    offsets = text64 * WORDS * n_videos * FRAMES + w3 * (n_videos * FRAMES) + v3 * FRAMES + f3
    valid = in_word[:, None, None] & in_video[None, :, None] & in_frame[None, None, :]
    score = tl.load(score_ptr + offsets, mask=valid, other=0.0).to(tl.float32)  # [WP, BB, FP]

    # ---- over words, per (video, frame): softmax over axis 0 with the word mask
    word_keep = in_word
    if HAS_WORD_KEEP:
        word_keep = word_keep & (tl.load(word_keep_ptr + text64 * WORDS + word, mask=in_word, other=0) != 0)
    keep = word_keep[:, None, None] & valid
    logit = tl.where(keep, score, _NEG)
    weight = tl.exp2((logit - tl.max(logit, axis=0)[None, :, :]) * _LOG2E)  # [WP, BB, FP]
    total = tl.sum(weight, axis=0)  # [BB, FP]
    if HAS_W1:
        weight = tl.reshape(_mix(tl.reshape(weight, (WP, BB * FP)), w1_ptr, WP, FP32_MIX, True), (WP, BB, FP))
    per_frame = tl.sum(tl.where(keep, score, 0.0) * weight, axis=0) / total  # [BB, FP]
    out = text64 * FRAMES * n_videos + frame[None, :] * n_videos + video[:, None]
    tl.store(per_frame_ptr + out, per_frame, mask=in_video[:, None] & in_frame[None, :])

    # ---- over frames, per (word, video): softmax over axis 2 with the frame mask
    frame_keep = in_video[:, None] & in_frame[None, :]
    if HAS_FRAME_KEEP:
        keep_at = frame_keep_ptr + video[:, None] * FRAMES + frame[None, :]
        frame_keep = frame_keep & (tl.load(keep_at, mask=frame_keep, other=0) != 0)
    keep = frame_keep[None, :, :] & valid
    logit = tl.where(keep, score, _NEG)
    weight = tl.exp2((logit - tl.max(logit, axis=2)[:, :, None]) * _LOG2E)
    total = tl.sum(weight, axis=2)  # [WP, BB]
    if HAS_F1:
        weight = tl.reshape(_mix(tl.reshape(weight, (WP * BB, FP)), f1_ptr, FP, FP32_MIX, False), (WP, BB, FP))
    per_word = tl.sum(tl.where(keep, score, 0.0) * weight, axis=2) / total  # [WP, BB]
    out = text64 * WORDS * n_videos + word[:, None] * n_videos + video[None, :]
    tl.store(per_word_ptr + out, per_word, mask=in_word[:, None] & in_video[None, :])


@triton.jit
def _axis_kernel(
    x_ptr, sxa, sxn, sxb, keep_ptr, ska, skn, skb, mix_ptr, out_ptr, soa, sob,
    n_b, b_blocks, scale, coef,
    N: tl.constexpr, NP: tl.constexpr, BB: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_MIX: tl.constexpr,
    FP32_MIX: tl.constexpr,
):
    """out[a, b] += coef * aosm_n(scale * x[a, n, b]) for one a and BB b's."""
    pid = tl.program_id(0)
    a = (pid // b_blocks).to(tl.int64)
    b = (pid % b_blocks) * BB + tl.arange(0, BB)  # [BB]
    n = tl.arange(0, NP)
    in_b = b < n_b
    keep = in_b[:, None] & (n < N)[None, :]  # [BB, NP]
    x = tl.load(x_ptr + a * sxa + n[None, :] * sxn + b[:, None] * sxb, mask=keep, other=0.0).to(tl.float32) * scale
    if HAS_KEEP:
        keep = keep & (tl.load(keep_ptr + a * ska + n[None, :] * skn + b[:, None] * skb, mask=keep, other=0) != 0)
    logit = tl.where(keep, x, _NEG)
    weight = tl.exp2((logit - tl.max(logit, axis=1)[:, None]) * _LOG2E)
    total = tl.sum(weight, axis=1)
    if HAS_MIX:
        weight = _mix(weight, mix_ptr, NP, FP32_MIX, False)
    result = tl.sum(tl.where(keep, x, 0.0) * weight, axis=1) / total  # [BB]
    out_at = out_ptr + a * soa + b * sob
    tl.store(out_at, tl.load(out_at, mask=in_b, other=0.0) + coef * result, mask=in_b)


def axis_config(n: int) -> tuple[int, int]:
    """(padded axis length, rows per program) of :func:`axis_aosm` over an axis of length ``n``."""
    n_pad = padded_size(n)
    return n_pad, max(16, min(64, TILE_ELEMENTS // (2 * n_pad)))


def level1_config(words: int, frames: int, videos: int) -> tuple[int, int, int]:
    """(padded words, padded frames, videos per program) of :func:`frame_word_level1`."""
    wp, fp = padded_size(words), padded_size(frames)
    return wp, fp, max(1, min(triton.next_power_of_2(videos), TILE_ELEMENTS // (wp * fp)))


def padded_matrix(mat: Tensor | None, size: int) -> Tensor | None:
    """A mixing matrix as contiguous fp32 zero-padded to [size, size] (None stays None: the identity)."""
    if mat is None:
        return None
    out = mat.new_zeros(size, size, dtype=torch.float32)
    out[: mat.shape[0], : mat.shape[1]] = mat
    return out


def _keep_bytes(keep: Tensor | None) -> Tensor | None:
    return None if keep is None else keep.to(torch.uint8)


def axis_aosm(out: Tensor, x: Tensor, mix: Tensor | None, keep: Tensor | None, scale: float, coef: float,
              fp32_mix: bool) -> None:
    """``out[a, b] += coef * aosm_n(scale * x[a, n, b])`` in place: AOSM over the middle axis of ``x``
    [A, N, B] (any strides, any float dtype), mixed by ``mix`` (padded fp32 [NP, NP] from
    :func:`padded_matrix`, or None for the identity), with ``keep`` (bool or uint8, broadcastable to
    [A, N, B], e.g. through expand()) dropping positions. ``out`` is fp32 [A, B], any strides."""
    A, N, B = x.shape
    if out.dtype != torch.float32 or out.shape != (A, B):
        raise ValueError(f"axis_aosm: out must be float32 of shape {(A, B)}, got {out.dtype} {tuple(out.shape)}")
    NP, BB = axis_config(N)
    if mix is not None and mix.shape != (NP, NP):
        raise ValueError(f"axis_aosm: the mixing matrix must be padded to {(NP, NP)}, got {tuple(mix.shape)}")
    b_blocks = triton.cdiv(B, BB)
    keep8 = _keep_bytes(None if keep is None else keep.expand(A, N, B))
    ks = keep8.stride() if keep8 is not None else (0, 0, 0)
    _axis_kernel[(A * b_blocks,)](
        x, *x.stride(), keep8 if keep8 is not None else x, *ks, mix if mix is not None else x, out, *out.stride(),
        B, b_blocks, float(scale), float(coef),
        N=N, NP=NP, BB=BB, HAS_KEEP=keep8 is not None, HAS_MIX=mix is not None, FP32_MIX=fp32_mix,
        num_warps=AXIS_WARPS,
    )


def frame_word_level1(scores: Tensor, w1: Tensor | None, f1: Tensor | None, word_keep: Tensor | None,
                      frame_keep: Tensor | None, fp32_mix: bool) -> tuple[Tensor, Tensor]:
    """Both level-1 AOSM reductions of the frame-word scores ``scores`` [A, W, B, F] (contiguous, 1/tau
    units, any float dtype): over words per frame (mixed by ``w1``) -> [A, F, B] and over frames per word
    (mixed by ``f1``) -> [A, W, B], fp32. ``w1`` / ``f1`` padded by :func:`padded_matrix` (None =
    identity); ``word_keep`` [A, W] and ``frame_keep`` [B, F] bool masks or None."""
    if not scores.is_contiguous():
        raise ValueError("frame_word_level1: scores must be contiguous [texts, words, videos, frames]")
    A, W, B, F = scores.shape
    WP, FP, BB = level1_config(W, F, B)
    video_blocks = triton.cdiv(B, BB)
    per_frame = scores.new_empty(A, F, B, dtype=torch.float32)
    per_word = scores.new_empty(A, W, B, dtype=torch.float32)
    wk, fk = _keep_bytes(word_keep), _keep_bytes(frame_keep)
    _level1_kernel[(A * video_blocks,)](
        scores, wk if wk is not None else scores, fk if fk is not None else scores,
        w1 if w1 is not None else scores, f1 if f1 is not None else scores, per_frame, per_word,
        B, video_blocks,
        WORDS=W, FRAMES=F, WP=WP, FP=FP, BB=BB, HAS_WORD_KEEP=wk is not None, HAS_FRAME_KEEP=fk is not None,
        HAS_W1=w1 is not None, HAS_F1=f1 is not None, FP32_MIX=fp32_mix, num_warps=LEVEL1_WARPS,
    )
    return per_frame, per_word


_TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def compile_for_gpu(words: int, frames: int, videos: int, dtype: torch.dtype, capability: int = 90,
                    masks: bool = True, mixes: bool = True) -> dict[str, dict[str, int]]:
    """Compile (ahead of time, no GPU needed) the kernels that :class:`~.triton.TritonBackend`
    launches for these shapes for an NVIDIA GPU of compute ``capability`` (90 = H100/H200); returns each
    kernel's registers per thread, spilled bytes (``local``), shared memory and warps, read from the cubin.
    Raises the compiler's error where a kernel does not compile."""
    from triton.backends.compiler import GPUTarget

    target = GPUTarget("cuda", capability, 32)
    fp32_mix = dtype == torch.float32
    wp, fp, bb = level1_config(words, frames, videos)
    level1 = dict(WORDS=words, FRAMES=frames, WP=wp, FP=fp, BB=bb, HAS_WORD_KEEP=masks, HAS_FRAME_KEEP=masks,
                  HAS_W1=mixes, HAS_F1=mixes, FP32_MIX=fp32_mix)
    level1_sig = {"score_ptr": "*" + _TRITON_TYPES[dtype], "word_keep_ptr": "*u8", "frame_keep_ptr": "*u8",
                  "w1_ptr": "*fp32", "f1_ptr": "*fp32", "per_frame_ptr": "*fp32", "per_word_ptr": "*fp32",
                  "n_videos": "i32", "video_blocks": "i32"}
    jobs = {f"level1 {words}x{frames}": (_level1_kernel, level1_sig, level1, LEVEL1_WARPS)}
    for n, x_type in ((words, dtype), (frames, dtype), (frames, torch.float32), (words, torch.float32)):
        n_pad, rows = axis_config(n)
        consts = dict(N=n, NP=n_pad, BB=rows, HAS_KEEP=masks, HAS_MIX=mixes, FP32_MIX=fp32_mix)
        sig = {"x_ptr": "*" + _TRITON_TYPES[x_type], "sxa": "i32", "sxn": "i32", "sxb": "i32", "keep_ptr": "*u8",
               "ska": "i32", "skn": "i32", "skb": "i32", "mix_ptr": "*fp32", "out_ptr": "*fp32", "soa": "i32",
               "sob": "i32", "n_b": "i32", "b_blocks": "i32", "scale": "fp32", "coef": "fp32"}
        jobs[f"axis n={n} {_TRITON_TYPES[x_type]}"] = (_axis_kernel, sig, consts, AXIS_WARPS)
    return {name: _compile(fn, sig, consts, warps, target) for name, (fn, sig, consts, warps) in jobs.items()}


def _compile(fn, signature: dict, constexprs: dict, warps: int, target) -> dict[str, int]:
    """Compile one kernel for ``target``; its resource usage from the cubin."""
    from triton.compiler import ASTSource

    signature = {**signature, **{name: "constexpr" for name in constexprs}}
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=target,
                            options={"num_warps": warps})
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        usage = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, check=True).stdout
    field = lambda key: int(re.search(rf"\b{key}:(\d+)", usage).group(1))  # noqa: E731
    return {"registers": field("REG"), "local": field("LOCAL"), "shared": int(kernel.metadata.shared), "warps": warps}
