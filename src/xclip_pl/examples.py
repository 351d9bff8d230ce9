"""Retrieval examples for the W&B dashboard: a few captions, the videos they retrieve first, thumbnails.

:func:`top_retrievals` is plain tensor maths on one rank's similarity rows; :func:`log_retrieval_examples`
turns its result into a ``wandb.Table`` (caption, ground truth, the top videos as frame strips with
their scores) through a ``WandbLogger``. Frames and caption texts come from the datamodule
(:meth:`~xclip_pl.data.datamodule.VideoTextDataModule.eval_video_frames` / ``eval_caption``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

#: frames of a video shown side by side in one thumbnail strip, and the strip's height in pixels
STRIP_FRAMES = 4
STRIP_HEIGHT = 64


@dataclass
class Retrieval:
    """One text-to-video query: its caption index, the right video and the top-ranked videos."""

    caption_index: int
    true_video: int
    videos: list[int]  # best first
    scores: list[float]  # logits, same order


def top_retrievals(rows: Tensor, caption_index: Tensor, caption_video: Tensor, queries: int, top: int = 3) -> list[Retrieval]:
    """The first ``queries`` rows of ``rows`` [captions, videos] (in ``caption_index`` order) with their
    ``top`` best videos."""
    order = torch.argsort(caption_index)[:queries]
    scores, videos = rows[order].float().topk(min(top, rows.shape[1]), dim=1)
    return [Retrieval(int(caption_index[i]), int(caption_video[i]), v.tolist(), s.tolist())
            for i, v, s in zip(order.tolist(), videos, scores)]


def frame_strip(frames: np.ndarray, frame_mask: np.ndarray, count: int = STRIP_FRAMES, height: int = STRIP_HEIGHT) -> np.ndarray:
    """``count`` evenly spaced decoded frames of ``frames`` uint8 [F, S, S, 3], side by side, ``height``
    pixels high (uint8 [height, count * height, 3]); a grey tile where a video has no decoded frame."""
    from PIL import Image

    valid = frames[frame_mask] if frame_mask.any() else np.full((1, height, height, 3), 128, np.uint8)
    picks = np.linspace(0, len(valid) - 1, num=min(count, len(valid))).round().astype(int)
    tiles = [np.asarray(Image.fromarray(valid[i]).resize((height, height), Image.BILINEAR)) for i in picks]
    return np.concatenate(tiles, axis=1)


def log_retrieval_examples(logger, datamodule, split: str, stage: str, retrievals: list[Retrieval]) -> None:
    """Log ``retrievals`` as the W&B table ``<stage>/examples`` (one row per query: caption, the right
    video, then each retrieved video as a frame strip with its score and whether it is the right one)."""
    import wandb

    if not retrievals:
        return
    top = len(retrievals[0].videos)
    columns = ["caption", "right video"] + [f"{name} {k}" for k in range(1, top + 1) for name in ("video", "score", "correct")]

    strips: dict[int, object] = {}

    def strip(video_index: int):  # each video decoded once per table
        if video_index not in strips:
            frames, mask = datamodule.eval_video_frames(split, video_index)
            strips[video_index] = wandb.Image(frame_strip(frames, mask), caption=datamodule.eval_video_id(split, video_index))
        return strips[video_index]

    data = []
    for r in retrievals:
        row = [datamodule.eval_caption(split, r.caption_index), strip(r.true_video)]
        for video, score in zip(r.videos, r.scores):
            row += [strip(video), round(score, 3), video == r.true_video]
        data.append(row)
    logger.log_table(key=f"{stage}/examples", columns=columns, data=data)
