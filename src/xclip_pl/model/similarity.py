"""X-CLIP's multi-grained similarity with Attention Over Similarity Matrix (AOSM).

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.

For a block of ``a`` texts and ``b`` videos it returns the [a, b] logits
``exp(logit_scale) * (S_vs + S_vw + S_sf + S_fw) / 4`` (xclip-method.md 1.8). Each AOSM reduction is
``sum_i (softmax(s / tau) @ W)_i * s_i`` over one axis, with an identity-initialised mixing matrix W.

How the engine computes it (same values as the formulas above, up to float rounding):

* ``sum_i (p W)_i s_i = sum_m p_m (W s)_m``: the mixing is a matmul on the *scores* (``W @ S`` along the
  reduced axis, one batched GEMM with the small W as the left operand) and the weights stay
  unnormalised, ``exp(s - max)``, divided by their sum once at the end.
* ``W_g`` is applied to the sentences and ``W_loc / tau`` to the words, or to the frames when they
  have fewer rows (``w W_loc f^T = w (f W_loc^T)^T``), once per call, not once per block as in the
  reference (:meth:`MultiGrainedSimilarity.prepare_text` / ``prepare_video``), in at least fp32.
* The frame-word matrix of a block is one GEMM ``((a w) d) @ (d (f b))`` laid out ``[a, w, f, b]``, so
  both level-1 reductions (over ``w`` and over ``f``) run over a non-innermost axis with the videos
  contiguous, and every mix is one batched GEMM on a view.
* Without gradients the unnormalised weights are computed and consumed in place and exact identity
  mixing matrices are skipped; with gradients the same maths runs out of place (``torch.softmax``),
  so training gets exact gradients from the same module.
* Half-precision features keep the frame-word scores and their mixes in their dtype; softmax maxima,
  exponentials, their sums and every reduction are fp32, and so are the returned logits.
* :meth:`MultiGrainedSimilarity.blockwise` tiles texts x videos so that one block's temporaries stay
  within a memory budget, on the features' device, writing into one preallocated [a, b] result;
  optionally through ``torch.compile`` on CUDA.
* On CPU without gradients the AOSM reductions of a block run in one fused C++ kernel
  (``kernels/aosm_cpu.cpp``, built on first use; the block loop around it is :mod:`.fused`): it reads
  the frame-word scores once, 16 videos at a time, and computes both level-1 and both level-2
  reductions in registers (``kernel="auto"``).
* On CUDA without gradients ``kernel="fused"`` runs them in Triton kernels (:mod:`.triton_kernel`):
  one kernel reads each text's frame-word tile once for both level-1 reductions, one kernel per
  single-axis AOSM adds each remaining term into the block's logits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.fused import Kernel, fused_blockwise, select_kernel, triton_blockwise


def attention_over_scores(scores: Tensor, mix: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """AOSM over the last axis of ``scores`` [..., n]: softmax(s / tau) mixed by ``mix`` [n, n], then the
    weighted sum of the scores. ``mask`` [..., n] (broadcastable) removes positions from the softmax and
    the sum; ``None`` keeps every position, as the reference does. Softmax statistics are in fp32."""
    logits = (scores.float() if scores.element_size() < 4 else scores) / temperature  # fp32 softmax for half types
    if mask is not None:
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        scores = scores.masked_fill(~mask, 0.0)
    weights = torch.softmax(logits, dim=-1).to(scores.dtype) @ mix.to(scores.dtype)  # [..., n], a' = a W
    return (weights * scores).sum(-1)


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


@dataclass
class PreparedVideo:
    """Video-side inputs of one block, frames first so that the block's GEMMs need no further copy."""

    video: Tensor  # [b, d]
    frame: Tensor  # [(f b), d] contiguous, frame k of video j at row k * b + j
    frame_mask: Tensor | None  # [f, b] bool, None when masks are off
    frame_local: Tensor  # [(f b), d] frame W_loc^T / tau when the videos carry W_loc, else ``frame``

    def __len__(self) -> int:
        return self.video.shape[0]


class MultiGrainedSimilarity(nn.Module):
    """The four X-CLIP scores (video-sentence, video-word, sentence-frame, frame-word) for texts x videos.

    Args:
        dim: embedding width.
        max_words: text length L (size of the word mixing matrices).
        max_frames: frame count F (size of the frame mixing matrices).
        temperature: AOSM softmax temperature tau (0.01 in the reference).
        mask_padding: mask pad words and padded frames out of every AOSM softmax and sum. The reference
            masks nothing (``False``): SOT, EOT, pads and padded frames take part.
    """

    def __init__(self, dim: int, max_words: int, max_frames: int, temperature: float = 0.01, mask_padding: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.mask_padding = mask_padding
        eye = torch.eye
        self.global_mat_weight = nn.Parameter(eye(dim))  # W_g, video-sentence
        self.word_logit_weight = nn.Parameter(eye(max_words))  # W_wl, video-word
        self.frame_logit_weight = nn.Parameter(eye(max_frames))  # W_fl, sentence-frame
        self.local_mat_weight = nn.Parameter(eye(dim))  # W_loc, frame-word raw matrix
        self.word_mat_weight = nn.Parameter(eye(max_words))  # W_w1, level 1 over words (per frame)
        self.frame_mat_weight = nn.Parameter(eye(max_frames))  # W_f1, level 1 over frames (per word)
        self.frame_mat_weight2 = nn.Parameter(eye(max_frames))  # W_f2, level 2 over frames
        self.word_mat_weight2 = nn.Parameter(eye(max_words))  # W_w2, level 2 over words

    @property
    def max_words(self) -> int:
        return self.word_logit_weight.shape[0]

    @property
    def max_frames(self) -> int:
        return self.frame_logit_weight.shape[0]

    def check_shapes(self, text: TextFeatures, video: VideoFeatures) -> None:
        words, frames = text.word_emb.shape[1], video.frame_emb.shape[1]
        if words != self.max_words or frames != self.max_frames:
            raise ValueError(
                f"the AOSM matrices are sized for max_words={self.max_words}, max_frames={self.max_frames}, "
                f"but the inputs have {words} words and {frames} frames: set data and model max_words/max_frames alike"
            )

    # ------------------------------------------------------------------------------------ public API
    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: Tensor) -> Tensor:
        """Logits [a, b] for every text x video pair, as one block (see :meth:`blockwise` for tiling)."""
        return self.blockwise(text, video, logit_scale, len(text), len(video))

    def blockwise(self, text: TextFeatures, video: VideoFeatures, logit_scale: Tensor, block_texts: int,
                  block_videos: int, compile: bool = False, kernel: Kernel = "auto") -> Tensor:
        """Logits [a, b] computed in blocks of ``block_texts`` x ``block_videos`` pairs.

        Every block sees the same prepared inputs, so any block size gives the one-block values up to
        float rounding. The result is fp32 for half features (else their dtype), on their device.
        Without gradients the blocks are written into one preallocated [a, b] tensor and a block's
        temporaries take about ``bytes_per_element * texts * videos * words * frames`` bytes; with
        gradients the blocks are concatenated (autograd keeps every block's activations then, so tiling
        bounds evaluation memory only). ``compile`` runs the block function through ``torch.compile``
        (CUDA and no grad only; ignored otherwise); partial blocks are then zero-padded to the full
        block shape so that one compiled graph serves every block. ``kernel`` picks the AOSM
        implementation: ``"torch"`` (tensor ops, any device, gradients), ``"fused"`` (the C++ CPU
        kernel, no gradients; an error where it cannot run) or ``"auto"`` (fused on CPU without
        gradients when it builds, else torch).
        """
        self.check_shapes(text, video)
        a, b = len(text), len(video)
        if a == 0 or b == 0:
            return text.word_emb.new_zeros(a, b, dtype=_acc_dtype(text.word_emb.dtype))
        ta, tb = max(1, min(block_texts, a)), max(1, min(block_videos, b))
        fast = not torch.is_grad_enabled()
        fused = select_kernel(kernel, text.word_emb, fast)  # checks ``kernel`` first
        mix = self._mixing_matrices(torch.float32 if fused is not None else text.word_emb.dtype, fast)  # kernel: fp32
        local_on_video = b * video.frame_emb.shape[1] < a * text.word_emb.shape[1]  # W_loc on the fewer rows
        prepared = self.prepare_text(text, local=not local_on_video)
        tau = self.temperature
        if not fast:
            cols = []
            for j in range(0, b, tb):
                video_block = self.prepare_video(video[j : j + tb], local=local_on_video)
                cols.append(torch.cat([_block_logits(prepared[i : i + ta], video_block, mix, logit_scale, tau, False)
                                       for i in range(0, a, ta)], 0))
            return torch.cat(cols, 1)
        if fused is not None:
            run = triton_blockwise if _is_triton(fused) else fused_blockwise
            return run(fused, self, prepared, video, mix, logit_scale, ta, tb, local_on_video)
        block_fn, padded = _block_logits, False
        if compile and text.word_emb.is_cuda:
            block_fn, padded = _compiled_block_logits(), True
            prepared = _pad_text(prepared, -(-a // ta) * ta)
        out = torch.empty(a, b, dtype=_acc_dtype(text.word_emb.dtype), device=text.word_emb.device)
        for j in range(0, b, tb):  # videos outside: each video block is laid out frames-first once
            video_block = self.prepare_video(video[j : j + tb], pad_to=tb if padded else None, local=local_on_video)
            for i in range(0, a, ta):
                block = block_fn(prepared[i : i + ta], video_block, mix, logit_scale, tau, True)
                out[i : i + ta, j : j + tb] = block[: a - i, : b - j]
        return out

    def bytes_per_element(self, dtype: torch.dtype, fused: bool = False) -> int:
        """Peak bytes of a no-grad block's temporaries per frame-word element: the scores and the mixed
        scores in the features' dtype plus the fp32 exponentials (plus two masked copies with masks);
        with the fused CPU kernel only the scores (a block's frame-word scores, or as many word-video
        scores of its coarse chunk)."""
        size = dtype.itemsize
        if fused:
            return size
        return 2 * size + max(4, size) + (2 * size if self.mask_padding else 0)

    def uses_fused_kernel(self, like: Tensor, kernel: Kernel = "auto") -> bool:
        """Whether :meth:`blockwise` with this ``kernel`` setting runs the fused CPU kernel for features
        like ``like`` under the current grad mode (builds the kernel on first use)."""
        return select_kernel(kernel, like, not torch.is_grad_enabled()) is not None

    # ------------------------------------------------------------------------------------ internals
    def prepare_text(self, text: TextFeatures, local: bool = True) -> PreparedText:
        """Per-text projections, done once per call (the reference redoes them per block): ``t W_g``
        and, with ``local``, ``w W_loc / tau``; computed in at least fp32, stored in the features' dtype."""
        acc = _acc_dtype(text.word_emb.dtype)
        sentence, word = text.sentence_emb, text.word_emb
        return PreparedText(
            sentence,
            _project(sentence, self.global_mat_weight.to(acc)),
            word,
            _project(word, self._local_matrix(acc)) if local else word,
            text.word_mask.bool() if self.mask_padding else None,
        )

    def _local_matrix(self, dtype: torch.dtype) -> Tensor:
        return self.local_mat_weight.to(dtype) * (1.0 / self.temperature)  # W_loc / tau

    def prepare_video(self, video: VideoFeatures, pad_to: int | None = None, local: bool = False) -> PreparedVideo:
        """Frames-first copy of a video block (zero-padded to ``pad_to`` videos if given); with ``local``
        also ``frame W_loc^T / tau`` (the frame-word scores are ``w W_loc f^T / tau`` either way: the
        projection goes to whichever side has fewer rows, computed in at least fp32)."""
        vid, frame, mask = video.video_emb, video.frame_emb, video.frame_mask.bool()
        if pad_to is not None and pad_to > len(video):
            extra = pad_to - len(video)
            vid = torch.cat([vid, vid.new_zeros(extra, vid.shape[1])])
            frame = torch.cat([frame, frame.new_zeros(extra, *frame.shape[1:])])
            mask = torch.cat([mask, mask.new_ones(extra, mask.shape[1])])
        b, f, d = frame.shape
        frames_first = frame.transpose(0, 1).reshape(f * b, d)
        frame_local = self.project_frames(frames_first) if local else frames_first
        return PreparedVideo(vid, frames_first, mask.t() if self.mask_padding else None, frame_local)

    def project_frames(self, frame: Tensor) -> Tensor:
        """``frame W_loc^T / tau`` over the last axis (rows in any order), computed in at least fp32 and
        returned in ``frame``'s dtype."""
        return _project(frame, self._local_matrix(_acc_dtype(frame.dtype)).t())

    def _mixing_matrices(self, dtype: torch.dtype, fast: bool) -> tuple[Tensor | None, ...]:
        """(W_wl, W_fl, W_w1, W_f1, W_f2, W_w2): the frame-word level-1 mixes in the features' dtype (they
        multiply the big score tensor), the others in at least fp32. Without gradients an exact identity
        comes back as ``None`` and its mix is skipped."""
        acc = _acc_dtype(dtype)
        mats = (self.word_logit_weight, self.frame_logit_weight, self.word_mat_weight, self.frame_mat_weight,
                self.frame_mat_weight2, self.word_mat_weight2)
        dtypes = (acc, acc, dtype, dtype, acc, acc)
        if fast:  # detached: matmul with a tensor that requires grad takes a slower path, even under no_grad
            mats = tuple(m.detach() for m in mats)
        return tuple(None if fast and _is_identity(m) else m.to(dt) for m, dt in zip(mats, dtypes))


# ---------------------------------------------------------------------------------------- block maths
def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: fp32 for half types, the dtype itself for fp32 / fp64."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _upcast(t: Tensor) -> Tensor:
    return t.to(_acc_dtype(t.dtype))


#: Rows projected at a time without gradients (bounds the fp32 temporaries of a half-precision projection).
PROJECT_ROWS = 1 << 14


def _project(x: Tensor, mat: Tensor) -> Tensor:
    """``x @ mat`` over the last axis, computed in ``mat``'s dtype (at least fp32) and returned in ``x``'s.
    Without gradients it runs in chunks of rows into one preallocated result, so the temporaries stay
    bounded however many texts or frames there are."""
    if torch.is_grad_enabled() or x.dtype == mat.dtype:
        return (x.to(mat.dtype) @ mat).to(x.dtype)
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_empty(flat.shape[0], mat.shape[1])
    for i in range(0, flat.shape[0], PROJECT_ROWS):
        out[i : i + PROJECT_ROWS] = flat[i : i + PROJECT_ROWS].to(mat.dtype) @ mat
    return out.view(*x.shape[:-1], mat.shape[1])


def _is_triton(module) -> bool:
    return getattr(module, "__name__", "").endswith(".triton_kernel")


def _is_identity(m: Tensor) -> bool:
    return m.shape[0] == m.shape[1] and torch.equal(m, torch.eye(m.shape[0], dtype=m.dtype, device=m.device))


def _mix(mat: Tensor | None, scores: Tensor, dim: int) -> Tensor:
    """``mat @ scores`` along axis ``dim`` (the mixed scores ``W s``) of a contiguous tensor, as one
    batched GEMM ``[n, n] @ [lead, n, trail]``; ``None`` is the identity."""
    if mat is None:
        return scores
    shape = scores.shape
    lead = math.prod(shape[:dim])
    return torch.matmul(mat, scores.reshape(lead, shape[dim], -1)).view(shape)


def _aosm(scores: Tensor, mat: Tensor | None, dim: int, keep: Tensor | None, fast: bool) -> Tensor:
    """AOSM of already ``1/tau``-scaled ``scores`` along ``dim``: ``sum_m softmax(s)_m (W s)_m`` (fp32, in
    the same scaled units). ``keep`` (bool, broadcastable) drops positions from the softmax and the sum."""
    if keep is not None:
        mixed = _mix(mat, scores.masked_fill(~keep, 0.0), dim)
        logits = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    else:
        mixed, logits = _mix(mat, scores, dim), scores
    if not fast:  # differentiable: plain softmax, out of place
        return (torch.softmax(_upcast(logits), dim) * _upcast(mixed)).sum(dim)
    weights = torch.softmax(logits, dim, dtype=_acc_dtype(logits.dtype))
    del logits
    return weights.mul_(mixed).sum(dim)


def _frame_word(word_local: Tensor, frame: Tensor, frames: int, word_mask: Tensor | None, frame_mask: Tensor | None,
                mix: tuple[Tensor | None, ...], fast: bool) -> Tensor:
    """Two-level AOSM frame-word score [a, b] in ``1/tau`` units. ``word_local`` [a, w, d] and ``frame``
    [(f b), d] (frames first), one of them with W_loc and 1/tau applied; masks [a, w] / [f, b] or None;
    ``mix`` = (W_w1, W_f1, W_f2, W_w2)."""
    a, w, d = word_local.shape
    f, b = frames, frame.shape[0] // frames
    w1, f1, f2, w2 = mix
    fine = (word_local.reshape(a * w, d) @ frame.t()).view(a, w, f, b)  # M / tau: one GEMM
    per_frame = _aosm(fine, w1, 1, None if word_mask is None else word_mask.view(a, w, 1, 1), fast)  # u [a, f, b]
    per_word = _aosm(fine, f1, 2, None if frame_mask is None else frame_mask.view(1, 1, f, b), fast)  # z [a, w, b]
    del fine
    over_frames = _aosm(per_frame, f2, 1, None if frame_mask is None else frame_mask.view(1, f, b), fast)  # [a, b]
    over_words = _aosm(per_word, w2, 1, None if word_mask is None else word_mask.view(a, w, 1), fast)  # [a, b]
    return (over_frames + over_words) * 0.5


def _block_logits(text: PreparedText, video: PreparedVideo, mix: tuple[Tensor | None, ...], logit_scale: Tensor,
                  tau: float, fast: bool) -> Tensor:
    """Logits [a, b] of one block (at least fp32). ``mix`` = (W_wl, W_fl, W_w1, W_f1, W_f2, W_w2)."""
    a, w, d = text.word.shape
    b = video.video.shape[0]
    f = video.frame.shape[0] // b
    inv_tau = 1.0 / tau
    video_sentence = _upcast(text.sentence_global @ video.video.t())  # [a, b]
    word_video = _upcast(text.word.reshape(a * w, d) @ video.video.t()).view(a, w, b) * inv_tau
    video_word = _aosm(word_video, mix[0], 1, None if text.word_mask is None else text.word_mask.view(a, w, 1), fast)
    sent_frame = _upcast(text.sentence @ video.frame.t()).view(a, f, b) * inv_tau
    sentence_frame = _aosm(sent_frame, mix[1], 1, None if video.frame_mask is None else video.frame_mask.view(1, f, b), fast)
    frame_word = _frame_word(text.word_local, video.frame_local, f, text.word_mask, video.frame_mask, mix[2:], fast)
    scale = logit_scale.to(video_sentence.dtype).exp() * 0.25
    return scale * (video_sentence + tau * (video_word + sentence_frame + frame_word))


_COMPILED = None


def _compiled_block_logits():
    """``torch.compile`` of the no-grad block function (created once per process). Each block shape,
    dtype and mask setting is its own static graph; dynamo's per-function recompile limit (8 by
    default, beyond which it silently runs eager) is raised to 64 so that several evaluation sizes in
    one process stay compiled."""
    global _COMPILED
    if _COMPILED is None:
        import torch._dynamo.config as dynamo_config

        for name in ("recompile_limit", "cache_size_limit"):
            if getattr(dynamo_config, name, 64) < 64:
                setattr(dynamo_config, name, 64)
        _COMPILED = torch.compile(_block_logits, dynamic=False)
    return _COMPILED


def _pad_text(text: PreparedText, n: int) -> PreparedText:
    """Zero-pad the texts to ``n`` rows (masks padded with True) so that every block has one shape."""
    extra = n - len(text)
    if extra <= 0:
        return text
    pad = lambda t, value=0: torch.cat([t, t.new_full((extra, *t.shape[1:]), value)])  # noqa: E731
    return PreparedText(pad(text.sentence), pad(text.sentence_global), pad(text.word), pad(text.word_local),
                        None if text.word_mask is None else pad(text.word_mask, True))
