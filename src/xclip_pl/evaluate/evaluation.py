"""Evaluation bookkeeping: per-rank feature buffers, gathering with de-duplication, metric tables."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from xclip_pl.model import TextFeatures, VideoFeatures


class EvalBuffer:
    """Features of unique videos and captions seen by this rank during one evaluation epoch."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.videos: list[VideoFeatures] = []
        self.video_index: list[Tensor] = []
        self.video_ok: list[Tensor] = []
        self.texts: list[TextFeatures] = []
        self.text_index: list[Tensor] = []
        self.caption_video: list[Tensor] = []

    @property
    def empty(self) -> bool:
        return not self.videos and not self.texts

    def add_videos(self, video: VideoFeatures, video_index: Tensor, video_ok: Tensor) -> None:
        self.videos.append(video)
        self.video_index.append(video_index)
        self.video_ok.append(video_ok.bool())

    def add_texts(self, text: TextFeatures, text_index: Tensor, caption_video: Tensor) -> None:
        self.texts.append(text)
        self.text_index.append(text_index)
        self.caption_video.append(caption_video)

    def gathered(self, gather: Callable[[Tensor], Tensor]) -> tuple[TextFeatures, Tensor, Tensor, VideoFeatures, Tensor]:
        """All ranks' features, duplicates (sampler padding) dropped, sorted by global index.

        Returns texts, their caption indices, each caption's video position, the videos and which videos
        decoded. Video positions equal ``video_index`` because every video 0..V-1 is present exactly once."""
        if not self.videos or not self.texts:
            raise RuntimeError("evaluation needs both loaders: [videos, captions]")
        video_order, video_index = _first_occurrence(gather(torch.cat(self.video_index)))
        text_order, text_index = _first_occurrence(gather(torch.cat(self.text_index)))
        video = VideoFeatures(*(gather(t)[video_order] for t in vars(VideoFeatures.cat(self.videos)).values()))
        text = TextFeatures(*(gather(t)[text_order] for t in vars(TextFeatures.cat(self.texts)).values()))
        video_ok = gather(torch.cat(self.video_ok))[video_order]
        caption_video = gather(torch.cat(self.caption_video))[text_order]
        expected = torch.arange(len(video), device=video_index.device)
        if not torch.equal(video_index, expected):
            raise RuntimeError("evaluation video indices are not 0..V-1: the video loader must cover every video once")
        return text, text_index, caption_video, video, video_ok


def _first_occurrence(index: Tensor) -> tuple[Tensor, Tensor]:
    """Positions of the first occurrence of each distinct index, in ascending index order."""
    order = torch.argsort(index, stable=True)
    sorted_index = index[order]
    keep = torch.ones_like(sorted_index, dtype=torch.bool)
    keep[1:] = sorted_index[1:] != sorted_index[:-1]
    return order[keep], sorted_index[keep]


def format_metric_table(metrics: dict[str, float], title: str = "retrieval") -> str:
    """A markdown table with one row per direction: R@1, R@5, R@10, MdR, MnR."""
    columns = ("R@1", "R@5", "R@10", "MdR", "MnR")
    lines = [f"{title}", "| direction | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for direction in ("t2v", "v2t", "v2t_group_max", "v2t_standard"):
        if f"{direction}/R@1" in metrics:
            lines.append(f"| {direction} | " + " | ".join(f"{metrics[f'{direction}/{c}']:.1f}" for c in columns) + " |")
    return "\n".join(lines)
