"""Symmetric InfoNCE over text x video logits, single-process or over a gathered global batch.

Axes: ``a`` texts, ``b`` videos, ``n`` the global batch (world size x local batch).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from xclip_pl.model.features import TextFeatures, VideoFeatures

Similarity = Callable[[TextFeatures, VideoFeatures], Tensor]
Gather = Callable[[TextFeatures | VideoFeatures], TextFeatures | VideoFeatures]


def symmetric_infonce(text_to_video: Tensor, video_to_text: Tensor | None = None, targets: Tensor | None = None,
                      same_video: Tensor | None = None) -> Tensor:
    """0.5 * (CE over rows of ``text_to_video`` + CE over rows of ``video_to_text``).

    ``text_to_video`` [a, n] and ``video_to_text`` [b, n] (default: the transpose of ``text_to_video``);
    row i's positive is column ``targets[i]`` (default: the diagonal). ``same_video`` (bool, the shape
    of both logit matrices; pairs i, j of one pair list are symmetric) removes columns from a row's
    softmax: the false negatives, other pairs of the row's own video. The positive itself is never removed.
    """
    if video_to_text is None:
        video_to_text = text_to_video.t()
    if targets is None:
        targets = torch.arange(text_to_video.shape[0], device=text_to_video.device)
    text_to_video, video_to_text = text_to_video.float(), video_to_text.float()
    if same_video is not None:
        rows = torch.arange(len(targets), device=targets.device)
        drop = same_video.clone()
        drop[rows, targets] = False
        text_to_video = text_to_video.masked_fill(drop, float("-inf"))
        video_to_text = video_to_text.masked_fill(drop, float("-inf"))
    return 0.5 * (F.cross_entropy(text_to_video, targets) + F.cross_entropy(video_to_text, targets))


def contrastive_loss(similarity: Similarity, text: TextFeatures, video: VideoFeatures, gather: Gather,
                     rank: int = 0, world_size: int = 1, local_loss: bool = True,
                     video_ids: Tensor | None = None, gather_ids: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """InfoNCE over the global batch: text i of the global batch is paired with video i.

    ``gather`` all-gathers features with gradients (its backward sums over ranks). With ``local_loss``
    each rank scores only its own texts against all videos and all texts against its own videos (the
    open_clip trick: ~2/W of the similarity work); otherwise every rank scores the full n x n matrix.
    Either way, after DDP's gradient averaging every parameter gets exactly the gradient of the
    single-process loss on the global batch; the value returned is that loss (``local_loss``: this rank's
    share times ``world_size``, whose mean over ranks is the global loss).

    ``video_ids`` [local batch] (the dataset's video index of each pair) turns on the false-negative
    mask: a text is not contrasted with the other pairs of its own video, nor a video with their captions
    (the reference contrasts them). ``gather_ids`` all-gathers them (no gradient; default: identity).
    """
    all_text, all_video = gather(text), gather(video)
    all_ids = None if video_ids is None else (gather_ids or (lambda ids: ids))(video_ids)
    if world_size == 1 or not local_loss:
        same = None if all_ids is None else all_ids[:, None] == all_ids[None, :]  # [n, n]
        return symmetric_infonce(similarity(all_text, all_video), same_video=same)
    batch = len(text)
    targets = rank * batch + torch.arange(batch, device=text.sentence_emb.device)  # [b] positives in the global batch
    text_to_video = similarity(text, all_video)  # [b, n]
    video_to_text = similarity(all_text, video).t()  # [b, n]
    same = None if all_ids is None else video_ids[:, None] == all_ids[None, :]  # [b, n]
    return symmetric_infonce(text_to_video, video_to_text, targets, same)
