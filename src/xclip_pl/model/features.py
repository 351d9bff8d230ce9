"""Feature containers passed between the encoders and the similarity head.

Axes: ``a`` texts, ``b`` videos, ``w`` words (token positions), ``f`` frames, ``d`` embedding dim.
Every embedding stored here is already L2-normalised over ``d``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class TextFeatures:
    """Sentence and word embeddings of a batch of captions."""

    sentence_emb: Tensor  # [a, d] projected EOT embedding
    word_emb: Tensor  # [a, w, d] projected embedding of every token position (SOT, words, EOT, pads)
    word_mask: Tensor  # [a, w] bool, True for SOT..EOT

    def __len__(self) -> int:
        return self.sentence_emb.shape[0]

    def __getitem__(self, idx) -> "TextFeatures":
        return TextFeatures(*(getattr(self, f.name)[idx] for f in fields(self)))

    def to(self, *args, **kwargs) -> "TextFeatures":
        return TextFeatures(*(_to(getattr(self, f.name), *args, **kwargs) for f in fields(self)))

    @staticmethod
    def cat(items: list["TextFeatures"]) -> "TextFeatures":
        return TextFeatures(*(torch.cat([getattr(i, f.name) for i in items]) for f in fields(TextFeatures)))


@dataclass
class VideoFeatures:
    """Pooled video embedding and the per-frame embeddings used by AOSM."""

    video_emb: Tensor  # [b, d] temporal encoder output, masked-mean pooled
    frame_emb: Tensor  # [b, f, d] per-frame embeddings entering AOSM
    frame_mask: Tensor  # [b, f] bool, True for decoded frames

    def __len__(self) -> int:
        return self.video_emb.shape[0]

    def __getitem__(self, idx) -> "VideoFeatures":
        return VideoFeatures(*(getattr(self, f.name)[idx] for f in fields(self)))

    def to(self, *args, **kwargs) -> "VideoFeatures":
        return VideoFeatures(*(_to(getattr(self, f.name), *args, **kwargs) for f in fields(self)))

    @staticmethod
    def cat(items: list["VideoFeatures"]) -> "VideoFeatures":
        return VideoFeatures(*(torch.cat([getattr(i, f.name) for i in items]) for f in fields(VideoFeatures)))


def _to(t: Tensor, *args, **kwargs) -> Tensor:
    """Move a tensor; dtype changes apply to floating tensors only (masks stay bool)."""
    if t.is_floating_point():
        return t.to(*args, **kwargs)
    device = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
    return t.to(device) if device is not None else t
