"""Retrieval examples for the W&B dashboard: a few captions, the videos they retrieve first, thumbnails.

:class:`RetrievalExamples` is the callback (``trainer.callbacks``); :func:`top_retrievals` is plain tensor
maths on one rank's similarity rows; :func:`log_retrieval_examples` logs one image per query through a
``WandbLogger``: the right video's frame strip on top, then the
strips of the videos it retrieves first, captioned with the query, the video ids, their scores and
which one is right. Online runs get the same as a ``wandb.Table`` (columns query, right video, retrieved,
frames: one row per query, the image in its cell); offline runs, the default without a login, keep the
images, since an offline table stores its images as the word "Image" (wandb issue #4611). Frames and caption texts
come from the datamodule (:meth:`~xclip_pl.data.datamodule.VideoTextDataModule.eval_video_frames`,
``eval_caption``, ``eval_video_id``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from xclip_pl.callbacks.base import RetrievalCallback
from xclip_pl.callbacks.run_files import wandb_online
from xclip_pl.evaluate.result import RetrievalResult

#: frames of a video shown side by side in one thumbnail strip, and the strip's height in pixels
STRIP_FRAMES = 4
STRIP_HEIGHT = 64


class RetrievalExamples(RetrievalCallback):
    """W&B retrieval examples: frame thumbnails of the videos a few captions retrieve, after every evaluation.

    After every validation and test, rank 0's first captions with the right video and the three videos each
    retrieves first are logged as ``<stage>/examples``: a ``wandb.Table`` with an image per row online, the
    images captioned with the scores offline (W&B logger and a datamodule with ``eval_video_frames`` only;
    otherwise nothing).

    Args:
        num_examples: captions logged per validation / test (rank 0's first, in caption order; 0 = none).
    """

    def __init__(self, num_examples: int = 8) -> None:
        self.num_examples = num_examples

    def on_retrieval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, result: RetrievalResult) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if (self.num_examples <= 0 or not trainer.is_global_zero or not isinstance(trainer.logger, WandbLogger)
                or not hasattr(datamodule, "eval_video_frames")):
            return
        retrievals = top_retrievals(result.rows, result.row_caption_index, result.row_caption_video, self.num_examples)
        log_retrieval_examples(trainer.logger, datamodule, result.stage, retrievals, table=wandb_online(trainer.logger))


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


def log_retrieval_examples(logger, datamodule, split: str, retrievals: list[Retrieval], table: bool = False) -> None:
    """Log ``retrievals`` of the evaluation split ``split`` (``val`` / ``test``) as ``<split>/examples``: the
    image list (one image per query, see the module doc), or with ``table`` a ``wandb.Table`` (query, right
    video, retrieved, frames)."""
    if not retrievals:
        return
    strips: dict[int, np.ndarray] = {}

    def strip(video_index: int) -> np.ndarray:  # each video decoded once per call
        if video_index not in strips:
            strips[video_index] = frame_strip(*datamodule.eval_video_frames(split, video_index))
        return strips[video_index]

    images, rows = [], []
    for r in retrievals:
        images.append(stack_strips([strip(r.true_video)] + [strip(v) for v in r.videos]))
        ranked = ", ".join(f"{k}. {datamodule.eval_video_id(split, v)} ({s:.2f}{', right' if v == r.true_video else ''})"
                           for k, (v, s) in enumerate(zip(r.videos, r.scores), start=1))
        rows.append((datamodule.eval_caption(split, r.caption_index), datamodule.eval_video_id(split, r.true_video), ranked))
    if table:
        import wandb  # noqa: PLC0415

        logger.log_table(key=f"{split}/examples", columns=["query", "right video", "retrieved", "frames"],
                         data=[[*row, wandb.Image(image)] for row, image in zip(rows, images)])
        return
    captions = [f"\"{query}\" | right video (top row): {right} | retrieved: {ranked}" for query, right, ranked in rows]
    logger.log_image(key=f"{split}/examples", images=images, caption=captions)


def stack_strips(strips: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Strips one above the other, left-aligned on a white background, ``gap`` pixels apart."""
    height = sum(s.shape[0] for s in strips) + gap * (len(strips) - 1)
    out = np.full((height, max(s.shape[1] for s in strips), 3), 255, np.uint8)
    top = 0
    for s in strips:
        out[top : top + s.shape[0], : s.shape[1]] = s
        top += s.shape[0] + gap
    return out
