"""Test-time re-scoring options (DSL, QB-Norm, Sinkhorn) evaluated beside the raw metrics.

Each option re-scores the full caption x video logits and its metrics are logged under its own name
(``test/dsl/t2v/R@1``), never mixed into the raw numbers. What each assumes:

- ``dsl`` (dual softmax, CAMoE): sees every test query at once (transductive); a repeated query breaks it.
- ``qb_norm`` (QB-Norm, dynamic inverted softmax): a bank of training captions scored against the same
  videos; works for a single query. Text-to-video only (video-to-text keeps the raw ranking).
- ``sinkhorn`` (SK-norm): normalises the whole test matrix to be doubly stochastic (transductive).
"""
from __future__ import annotations

from typing import Literal

from torch import Tensor

from .postprocess import dual_softmax, qb_norm, sinkhorn
from .retrieval import TieRule, retrieval_metrics

TestTimeOption = Literal["dsl", "qb_norm", "sinkhorn"]


def rescore(sim: Tensor, option: TestTimeOption, temperature: float, bank_sim: Tensor | None = None,
            qb_norm_k: int = 1, qb_norm_beta: float = 20.0, sinkhorn_iterations: int = 50) -> tuple[Tensor, Tensor]:
    """``(text-to-video matrix, video-to-text matrix)``, both [captions, videos]; rows (t2v) or columns
    (v2t) are what gets ranked."""
    if option == "dsl":
        return dual_softmax(sim, temperature), dual_softmax(sim.t(), temperature).t()
    if option == "sinkhorn":
        return sinkhorn(sim, temperature, sinkhorn_iterations), sinkhorn(sim.t(), temperature, sinkhorn_iterations).t()
    if bank_sim is None:
        raise ValueError("qb_norm needs a bank of training-caption similarities")
    return qb_norm(sim, bank_sim, qb_norm_k, qb_norm_beta), sim


def rescored_metrics(sim: Tensor, caption_video: Tensor, option: TestTimeOption, ties: TieRule,
                     missing_videos: Tensor | None, **kwargs) -> dict[str, float]:
    """Metrics of one option: t2v from the re-scored rows, v2t (both conventions) from the re-scored columns."""
    t2v_sim, v2t_sim = rescore(sim, option, **kwargs)
    t2v = retrieval_metrics(t2v_sim, caption_video, ties, missing_videos)
    v2t = retrieval_metrics(v2t_sim, caption_video, ties, missing_videos)
    return {k: v for k, v in t2v.items() if k.startswith("t2v/")} | {k: v for k, v in v2t.items() if not k.startswith("t2v/")}
