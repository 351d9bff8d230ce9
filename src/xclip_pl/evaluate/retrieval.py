"""Retrieval metrics from a full similarity matrix: R@K, median and mean rank, both directions.

Ranks are 1-based. Ties with the ground-truth score are resolved by ``ties``:

- ``pessimistic`` (default): every other item scoring >= the ground truth ranks before it, so identical
  scores (e.g. several undecodable videos) never count as a hit;
- ``optimistic``: only strictly higher scores rank before it;
- ``mean``: the average of the two.

The reference code instead lets a row with k tied entries contribute k ranks (xclip-method.md 10.4), which
inflates the denominator; with no ties, which is the case for real models, all rules agree with it.
MdR is the median of the ranks, averaging the two middle values for an even count (NumPy's convention,
as the reference's 1:1 evaluation). MnR is the mean rank. Non-finite scores are an error.

Captions may outnumber videos (several captions per video, e.g. MSVD). Text-to-video ranks every
caption's video among all videos. Video-to-text is reported two ways:

- ``v2t/*``, the standard multi-caption rule: a video's rank is the best rank of any of its captions
  among ALL captions (for 1:1 data this is the plain rank);
- ``v2t_group_max/*``, the reference's lenient rule (xclip-method.md 10.2), logged only for
  multi-caption data: each caption group is scored by its best caption, and a video ranks the V groups.
  The paper's MSVD video-to-text numbers use this one. R@1 agrees under both (ties aside); R@5, R@10,
  MdR and MnR are more lenient under group-max.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchmetrics import Metric

TieRule = Literal["pessimistic", "optimistic", "mean"]
RECALL_AT = (1, 5, 10)


def ground_truth_ranks(sim: Tensor, positives: Tensor, ties: TieRule = "pessimistic") -> Tensor:
    """1-based rank [q] of each query's positive among its row of ``sim`` [q, g]; ``positives`` [q, g] bool
    marks the correct items (several per row allowed: the best-scored one counts)."""
    if not torch.isfinite(sim).all():
        raise ValueError("similarity matrix has non-finite entries; cannot rank (undecodable inputs upstream?)")
    best = sim.masked_fill(~positives, float("-inf")).max(dim=1, keepdim=True).values  # [q, 1]
    negatives = sim.masked_fill(positives, float("-inf"))  # [q, g]: positives never outrank themselves
    higher = (negatives > best).sum(1).float()
    tied = (negatives == best).sum(1).float()
    extra = {"pessimistic": tied, "optimistic": torch.zeros_like(tied), "mean": tied / 2}[ties]
    return higher + extra + 1


def summarize_ranks(ranks: Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), MdR, MnR of 1-based ranks [q]."""
    ranks = ranks.double()
    out = {f"R@{k}": 100.0 * (ranks <= k).double().mean().item() for k in RECALL_AT}
    out["MdR"] = ranks.quantile(0.5).item()
    out["MnR"] = ranks.mean().item()
    return out


def retrieval_metrics(sim: Tensor, caption_video: Tensor, ties: TieRule = "pessimistic",
                      missing_videos: Tensor | None = None) -> dict[str, float]:
    """``sim`` [n_captions, n_videos]; ``caption_video`` [n_captions] is each caption's video column.

    Returns ``t2v/R@1`` ... ``v2t/MnR``; with several captions per video also ``v2t_group_max/...``
    (the reference's lenient convention, see the module docstring). ``missing_videos`` [n_videos] bool
    marks videos that could not be decoded: they rank below every real video, and every query that
    needs one (its captions in t2v, the video itself in v2t) counts as a miss with the worst rank.
    """
    n_captions, n_videos = sim.shape
    videos = torch.arange(n_videos, device=sim.device)
    positives = caption_video[:, None] == videos[None, :]  # [c, v]
    if not positives.any(0).all():
        raise ValueError("every video needs at least one caption for video-to-text retrieval")
    missing = torch.zeros(n_videos, dtype=torch.bool, device=sim.device) if missing_videos is None else missing_videos.bool()
    if missing.any():
        floor = sim[:, ~missing].min() - 1.0 if (~missing).any() else sim.new_tensor(0.0)
        sim = sim.masked_fill(missing[None, :], float(floor))
    t2v = ground_truth_ranks(sim, positives, ties).masked_fill(missing[caption_video], n_videos)
    v2t = ground_truth_ranks(sim.t(), positives.t(), ties).masked_fill(missing, n_captions)
    out = {**_prefixed("t2v", t2v), **_prefixed("v2t", v2t)}
    if n_captions > n_videos:
        group = sim.new_full((n_videos, n_videos), float("-inf"))  # [caption group i, video j]
        group = group.scatter_reduce(0, caption_video[:, None].expand(-1, n_videos), sim, "amax")
        group_ranks = ground_truth_ranks(group.t(), torch.eye(n_videos, dtype=torch.bool, device=sim.device), ties)
        out.update(_prefixed("v2t_group_max", group_ranks.masked_fill(missing, n_videos)))
    return out


def _prefixed(direction: str, ranks: Tensor) -> dict[str, float]:
    return {f"{direction}/{k}": v for k, v in summarize_ranks(ranks).items()}


class RetrievalMetrics(Metric):
    """Accumulates rows of the caption x video similarity matrix (each rank may hold any subset of rows)
    and computes :func:`retrieval_metrics` over all of them; rows are synced across ranks by
    concatenation and de-duplicated by caption index (distributed samplers pad with duplicates).

    Args:
        ties: tie rule for ranks (see the module docstring).
    """

    full_state_update = False

    def __init__(self, ties: TieRule = "pessimistic", **kwargs) -> None:
        super().__init__(**kwargs)
        self.ties = ties
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("caption_index", default=[], dist_reduce_fx="cat")
        self.add_state("caption_video", default=[], dist_reduce_fx="cat")
        self.missing_videos: Tensor | None = None  # [n_videos] bool, set before compute (same on every rank)

    def update(self, rows: Tensor, caption_index: Tensor, caption_video: Tensor) -> None:
        """``rows`` [a, n_videos] scores of captions ``caption_index`` [a], whose videos are ``caption_video`` [a]."""
        self.rows.append(rows.float())
        self.caption_index.append(caption_index.long())
        self.caption_video.append(caption_video.long())

    def compute(self) -> dict[str, float]:
        rows, index, video = (_cat(x) for x in (self.rows, self.caption_index, self.caption_video))
        order = torch.argsort(index, stable=True)
        keep = torch.ones_like(order, dtype=torch.bool)
        keep[1:] = index[order][1:] != index[order][:-1]  # first copy of each caption index
        order = order[keep]
        return retrieval_metrics(rows[order], video[order], self.ties, self.missing_videos)


def _cat(x: Tensor | list[Tensor]) -> Tensor:
    return torch.cat(x) if isinstance(x, list) else x
