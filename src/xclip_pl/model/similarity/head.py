"""X-CLIP's multi-grained similarity with Attention Over Similarity Matrix (AOSM): the parameters.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.

For a block of ``a`` texts and ``b`` videos the logits are
``exp(logit_scale) * (S_vs + S_vw + S_sf + S_fw) / 4`` (xclip-method.md 1.8). Each AOSM reduction is
``sum_i (softmax(s / tau) @ W)_i * s_i`` over one axis, with an identity-initialised mixing matrix W
(:func:`attention_over_scores` is that formula, readable).

:class:`MultiGrainedSimilarity` holds the eight matrices and prepares the inputs once per call (``W_g``
on the sentences, ``W_loc / tau`` on the words or on the frames when they have fewer rows:
``w W_loc f^T = w (f W_loc^T)^T``, in at least fp32). :meth:`~MultiGrainedSimilarity.blockwise` hands
them to the tiling loop (:mod:`.tiling`), which runs the backend chosen by name (:mod:`.backends`):
``torch`` (the reference, with gradients), ``cpu`` (the fused C++ kernel) or ``triton``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.similarity.backends import Kernel, Mixes, SimilarityBackend, select_backend
from xclip_pl.model.similarity.prepared import FrameLayout, PreparedText, PreparedVideo, accumulation_dtype
from xclip_pl.model.similarity.tiling import tiled_logits


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
        Without gradients a block's temporaries take about ``backend.bytes_per_element * texts * videos
        * words * frames`` bytes; with gradients autograd keeps every block's activations, so tiling
        bounds evaluation memory only. ``compile`` runs the torch block function through
        ``torch.compile`` (CUDA and no grad only; ignored otherwise). ``kernel`` picks the backend
        (:func:`~.backends.select_backend`): ``"torch"`` (tensor ops, any device, gradients),
        ``"fused"`` (the C++ CPU kernel or the Triton kernels on CUDA, no gradients; an error where it
        cannot run) or ``"auto"`` (the C++ kernel on CPU without gradients when it builds, else torch).
        """
        self.check_shapes(text, video)
        a, b = len(text), len(video)
        if a == 0 or b == 0:
            return text.word_emb.new_zeros(a, b, dtype=accumulation_dtype(text.word_emb.dtype))
        backend = self.backend_for(text.word_emb, kernel)  # checks ``kernel`` first
        return tiled_logits(self, text, video, logit_scale, block_texts, block_videos, backend, compile=compile)

    def backend_for(self, like: Tensor, kernel: Kernel = "auto") -> SimilarityBackend:
        """The backend :meth:`blockwise` runs for this ``kernel`` setting on features like ``like`` under
        the current grad mode (builds the CPU kernel on first use)."""
        return select_backend(kernel, like.device, like.dtype, needs_grad=torch.is_grad_enabled())

    # ------------------------------------------------------------------------------------ inputs
    def prepare_text(self, text: TextFeatures, local: bool = True) -> PreparedText:
        """Per-text projections, done once per call (the reference redoes them per block): ``t W_g``
        and, with ``local``, ``w W_loc / tau``; computed in at least fp32, stored in the features' dtype."""
        acc = accumulation_dtype(text.word_emb.dtype)
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

    def prepare_video(self, video: VideoFeatures, pad_to: int | None = None, local: bool = False,
                      layout: FrameLayout = "frames_first") -> PreparedVideo:
        """A video block with its frames stacked as ``layout`` says (frames first: a copy), zero-padded to
        ``pad_to`` videos if given; with ``local`` also ``frame W_loc^T / tau`` (the frame-word scores are
        ``w W_loc f^T / tau`` either way: the projection goes to whichever side has fewer rows, computed
        in at least fp32)."""
        vid, frame, mask = video.video_emb, video.frame_emb, video.frame_mask.bool()
        if pad_to is not None and pad_to > len(video):
            extra = pad_to - len(video)
            vid = torch.cat([vid, vid.new_zeros(extra, vid.shape[1])])
            frame = torch.cat([frame, frame.new_zeros(extra, *frame.shape[1:])])
            mask = torch.cat([mask, mask.new_ones(extra, mask.shape[1])])
        b, f, d = frame.shape
        stacked = frame.transpose(0, 1).reshape(f * b, d) if layout == "frames_first" else frame.reshape(b * f, d)
        frame_local = self.project_frames(stacked) if local else stacked
        return PreparedVideo(vid, stacked, mask.t() if self.mask_padding else None, frame_local, layout)

    def project_frames(self, frame: Tensor) -> Tensor:
        """``frame W_loc^T / tau`` over the last axis (rows in any order), computed in at least fp32 and
        returned in ``frame``'s dtype."""
        return _project(frame, self._local_matrix(accumulation_dtype(frame.dtype)).t())

    def mixing_matrices(self, dtype: torch.dtype, fast: bool) -> Mixes:
        """(W_wl, W_fl, W_w1, W_f1, W_f2, W_w2): the frame-word level-1 mixes in ``dtype`` (they multiply
        the big score tensor), the others in at least fp32. Without gradients (``fast``) an exact
        identity comes back as ``None`` and its mix is skipped."""
        acc = accumulation_dtype(dtype)
        mats = (self.word_logit_weight, self.frame_logit_weight, self.word_mat_weight, self.frame_mat_weight,
                self.frame_mat_weight2, self.word_mat_weight2)
        dtypes = (acc, acc, dtype, dtype, acc, acc)
        if fast:  # detached: matmul with a tensor that requires grad takes a slower path, even under no_grad
            mats = tuple(m.detach() for m in mats)
        return tuple(None if fast and _is_identity(m) else m.to(dt) for m, dt in zip(mats, dtypes))


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


def _is_identity(m: Tensor) -> bool:
    return m.shape[0] == m.shape[1] and torch.equal(m, torch.eye(m.shape[0], dtype=m.dtype, device=m.device))
