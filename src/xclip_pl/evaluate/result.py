"""What one evaluation epoch produced, as the LightningModule hands it to the callbacks that observe it.

Lightning runs the callbacks' ``on_validation_epoch_end`` / ``on_test_epoch_end`` *before* the module's hook
of the same name, and the module scores the similarity in its own hook, so a callback cannot read the result
there. The module instead calls ``on_retrieval_end(trainer, pl_module, result)`` on every callback that defines
it (:class:`xclip_pl.callbacks.base.RetrievalCallback`), right after logging the raw metrics and still inside
its epoch-end hook, so ``pl_module.log`` works there as in the module.

Axes: ``a`` captions (all ranks), ``r`` this rank's share of the caption rows, ``b`` videos.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from xclip_pl.evaluate.retrieval import TieRule
from xclip_pl.model import TextFeatures, VideoFeatures

V2TConvention = Literal["standard", "group_max"]


@dataclass
class RetrievalResult:
    """One evaluation split, gathered from every rank and scored."""

    stage: Literal["val", "test"]  # the log-key prefix
    rows: Tensor  # [r, b] fp32: this rank's rows of the caption x video logits
    row_positions: Tensor  # [r] positions of those rows among the a captions
    caption_index: Tensor  # [a] global caption index of each caption, ascending
    caption_video: Tensor  # [a] position of each caption's video among the b videos
    text: TextFeatures  # a captions, in the evaluation dtype
    video: VideoFeatures  # b videos, in the evaluation dtype
    missing_videos: Tensor  # [b] bool: videos that did not decode
    metrics: dict[str, float]  # the raw metrics as logged, without the stage prefix
    ties: TieRule  # how the raw metrics ranked ties
    v2t_multi_caption: V2TConvention  # which multi-caption convention the raw metrics call ``v2t/*``

    @property
    def row_caption_index(self) -> Tensor:
        """[r] global caption index of each of this rank's rows."""
        return self.caption_index[self.row_positions]

    @property
    def row_caption_video(self) -> Tensor:
        """[r] video position of each of this rank's rows."""
        return self.caption_video[self.row_positions]


def name_v2t(metrics: dict[str, float], headline: V2TConvention) -> dict[str, float]:
    """Multi-caption data: put the chosen video-to-text convention under ``v2t/*`` and the other beside it
    (``v2t_standard/*`` or ``v2t_group_max/*``); one caption per video: unchanged."""
    if headline == "standard" or not any(k.startswith("v2t_group_max/") for k in metrics):
        return metrics
    renamed = {}
    for key, value in metrics.items():
        direction, name = key.split("/", 1)
        direction = {"v2t": "v2t_standard", "v2t_group_max": "v2t"}.get(direction, direction)
        renamed[f"{direction}/{name}"] = value
    return renamed
