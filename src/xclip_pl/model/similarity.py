"""X-CLIP's multi-grained similarity with Attention Over Similarity Matrix (AOSM).

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames, ``d`` embedding dim.

For a block of ``a`` texts and ``b`` videos it returns the [a, b] logits
``exp(logit_scale) * (S_vs + S_vw + S_sf + S_fw) / 4`` (xclip-method.md 1.8). Each AOSM reduction is
``sum_i (softmax(s / tau) @ W)_i * s_i`` over one axis, with an identity-initialised mixing matrix W.
"""
from __future__ import annotations

import torch
from einops import einsum, rearrange
from torch import Tensor, nn

from .features import TextFeatures, VideoFeatures


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

    def forward(self, text: TextFeatures, video: VideoFeatures, logit_scale: Tensor) -> Tensor:
        """Logits [a, b] for every text x video pair of the block."""
        self.check_shapes(text, video)
        tau = self.temperature
        word_mask = text.word_mask if self.mask_padding else None  # [a, w]
        frame_mask = video.frame_mask if self.mask_padding else None  # [b, f]
        sent, word = text.sentence_emb, text.word_emb  # [a, d], [a, w, d]
        vid, frame = video.video_emb, video.frame_emb  # [b, d], [b, f, d]

        video_sentence = einsum(sent @ self.global_mat_weight, vid, "a d, b d -> a b")
        word_video = einsum(word, vid, "a w d, b d -> a b w")
        video_word = attention_over_scores(word_video, self.word_logit_weight, tau, _rows(word_mask))
        sent_frame = einsum(sent, frame, "a d, b f d -> a b f")
        sentence_frame = attention_over_scores(sent_frame, self.frame_logit_weight, tau, _cols(frame_mask))
        frame_word = self.frame_word_score(word @ self.local_mat_weight, frame, word_mask, frame_mask)
        return logit_scale.exp() * (video_sentence + video_word + sentence_frame + frame_word) / 4

    def frame_word_score(self, word: Tensor, frame: Tensor, word_mask: Tensor | None, frame_mask: Tensor | None) -> Tensor:
        """Two-level AOSM over the word x frame matrix M [a, b, w, f] = (w W_loc) . f."""
        tau = self.temperature
        fine = einsum(word, frame, "a w d, b f d -> a b w f")
        wm = None if word_mask is None else rearrange(word_mask, "a w -> a 1 1 w")
        fm = None if frame_mask is None else rearrange(frame_mask, "b f -> 1 b 1 f")
        per_frame = attention_over_scores(fine.transpose(-1, -2), self.word_mat_weight, tau, wm)  # u [a, b, f]
        per_word = attention_over_scores(fine, self.frame_mat_weight, tau, fm)  # z [a, b, w]
        over_frames = attention_over_scores(per_frame, self.frame_mat_weight2, tau, _cols(frame_mask))  # [a, b]
        over_words = attention_over_scores(per_word, self.word_mat_weight2, tau, _rows(word_mask))  # [a, b]
        return (over_frames + over_words) / 2


def _rows(word_mask: Tensor | None) -> Tensor | None:
    """[a, w] -> [a, 1, w], broadcast over videos."""
    return None if word_mask is None else rearrange(word_mask, "a w -> a 1 w")


def _cols(frame_mask: Tensor | None) -> Tensor | None:
    """[b, f] -> [1, b, f], broadcast over texts."""
    return None if frame_mask is None else rearrange(frame_mask, "b f -> 1 b f")
