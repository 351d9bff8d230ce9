"""What each of X-CLIP's four scores contributes, on a sample block of evaluation features.

Axes: ``a`` texts, ``b`` videos, ``w`` words, ``f`` frames.

The logits are ``exp(logit_scale) / 4 * (S_vs + S_vw + S_sf + S_fw)`` (``model/similarity/head.py``).
:func:`similarity_terms` returns the four summands in logit units, computed with the similarity package's
own functions (the prepared inputs, the score GEMMs and the ``torch`` backend's AOSM), so they add up to
``XCLIP.similarity`` of the same block; nothing of the similarity maths is changed or copied.
:func:`term_diagnostics` reduces them to numbers for a dashboard: each term's share of the score, the
video-text R@1 each term alone would give on the block, and the entropy of the AOSM attention over words
(video-word) and over frames (sentence-frame).
"""
from __future__ import annotations

import torch
from torch import Tensor

from xclip_pl.model import TextFeatures, VideoFeatures
from xclip_pl.model.similarity.backends.torch_reference import aosm, frame_word_aosm
from xclip_pl.model.similarity.prepared import coarse_scores, frame_word_scores, upcast

TERMS = ("video_sentence", "video_word", "sentence_frame", "frame_word")


@torch.no_grad()
def similarity_terms(model, text: TextFeatures, video: VideoFeatures) -> dict[str, Tensor]:
    """The four terms [a, b] (fp32, logit units) of ``model`` (an ``XCLIP``) for every text x video pair;
    their sum is ``model.similarity(text, video)``."""
    head = model.similarity_head
    text, video = text.to(torch.float32), video.to(torch.float32)
    prepared_text = head.prepare_text(text, local=True)
    prepared_video = head.prepare_video(video, local=False, layout="frames_first")
    mix = head.mixing_matrices(torch.float32, fast=True)
    a, w, b, f = len(text), text.word_emb.shape[1], len(video), video.frame_emb.shape[1]
    word_keep, frame_keep = _keeps(prepared_text.word_mask, prepared_video.frame_mask, a, w, f, b)
    scores, inv_tau = coarse_scores(prepared_text, prepared_video), 1.0 / head.temperature
    video_word = aosm(upcast(scores.word_video) * inv_tau, mix[0], 1, word_keep, True)  # [a, b], 1/tau units
    sentence_frame = aosm(upcast(scores.sentence_frame) * inv_tau, mix[1], 1, frame_keep, True)
    fine = frame_word_scores(prepared_text, prepared_video)  # [a, w, f, b]
    frame_word = frame_word_aosm(fine, prepared_text.word_mask, prepared_video.frame_mask, mix[2:], True)
    scale = model.logit_scale.detach().float().exp() * 0.25
    tau = head.temperature
    return {"video_sentence": scale * upcast(scores.video_sentence), "video_word": scale * tau * video_word,
            "sentence_frame": scale * tau * sentence_frame, "frame_word": scale * tau * frame_word}


@torch.no_grad()
def attention_entropies(model, text: TextFeatures, video: VideoFeatures) -> dict[str, float]:
    """Mean entropy (nats) of the AOSM softmax over words (video-word term) and over frames (sentence-frame
    term) over every text x video pair, and each divided by the log of the positions it spreads over
    (``*_normalised``: 1 = uniform attention, 0 = one position)."""
    head = model.similarity_head
    text, video = text.to(torch.float32), video.to(torch.float32)
    prepared_text = head.prepare_text(text, local=False)
    prepared_video = head.prepare_video(video, local=False, layout="frames_first")
    a, w, b, f = len(text), text.word_emb.shape[1], len(video), video.frame_emb.shape[1]
    word_keep, frame_keep = _keeps(prepared_text.word_mask, prepared_video.frame_mask, a, w, f, b)
    scores, inv_tau = coarse_scores(prepared_text, prepared_video), 1.0 / head.temperature
    words = softmax_entropy(upcast(scores.word_video) * inv_tau, word_keep)  # [a, b] each
    frames = softmax_entropy(upcast(scores.sentence_frame) * inv_tau, frame_keep)
    out = {}
    for name, (entropy, positions) in (("words", words), ("frames", frames)):
        out[f"entropy/{name}"] = float(entropy.mean())
        out[f"entropy_normalised/{name}"] = float((entropy / positions.clamp(min=2).log()).mean())
    return out


def softmax_entropy(logits: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """Entropy (nats) of ``softmax(logits)`` along axis 1 of ``logits`` [a, n, b], ``keep`` (bool,
    broadcastable) leaving positions out; and the number of positions kept. Both [a, b]."""
    n = logits.shape[1]
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    entropy = -torch.where(p > 0, p * log_p, torch.zeros_like(p)).sum(1)
    kept = (keep.expand_as(logits).sum(1) if keep is not None else torch.full_like(entropy, n)).to(entropy.dtype)
    return entropy, kept


def term_diagnostics(terms: dict[str, Tensor]) -> dict[str, float]:
    """For terms [n, n] of a square block whose diagonal is the ground truth: ``share/<term>`` (its mean
    absolute value over the summed mean absolute values of all terms: how much of the score it is),
    ``gap/<term>`` (its mean on the diagonal minus its mean off it, logit units: how much it separates
    the right video) and ``R@1/<term>`` (text-to-video R@1 in percent on the block ranked by it alone)."""
    magnitude = {name: float(t.abs().mean()) for name, t in terms.items()}
    total = sum(magnitude.values()) or 1.0
    out = {}
    for name, t in terms.items():
        n = t.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=t.device)
        out[f"share/{name}"] = magnitude[name] / total
        out[f"gap/{name}"] = float(t[eye].mean() - t[~eye].mean()) if n > 1 else 0.0
        out[f"R@1/{name}"] = 100.0 * float((t.argmax(1) == torch.arange(n, device=t.device)).float().mean())
    return out


def _keeps(word_mask: Tensor | None, frame_mask: Tensor | None, a: int, w: int, f: int, b: int):
    """The masks broadcast over [a, w, b] (words) and [a, f, b] (frames), None when masking is off."""
    word_keep = None if word_mask is None else word_mask.view(a, w, 1)
    frame_keep = None if frame_mask is None else frame_mask.view(1, f, b)
    return word_keep, frame_keep

