"""Test-time re-scoring of a retrieval similarity matrix (xclip-method.md 10.5).

None of these is part of X-CLIP: the official evaluation uses the raw logits. Peers add them at test
time, so report them in separate, labelled columns and never in headline numbers.

Every function takes ``sim`` [queries, gallery] (rows are the queries: texts for text-to-video,
videos for video-to-text; pass ``sim.t()`` for the other direction) and returns a matrix of the same
shape, meant for ranking **along rows**. Temperatures are in the units of ``sim``: X-CLIP logits carry
the logit scale (about 100), so a temperature of 1 on logits is 0.01 on cosine similarities. Inputs
must be finite; half-precision inputs are computed in fp32.

Test-time options (:func:`rescored_metrics`): Test-time re-scoring options (DSL, QB-Norm, Sinkhorn) evaluated beside the raw metrics.

Each option re-scores the full caption x video logits and its metrics are logged under its own name
(``test/dsl/t2v/R@1``), never mixed into the raw numbers. What each assumes:

- ``dsl`` (dual softmax, CAMoE): sees every test query at once (transductive); a repeated query breaks it.
- ``qb_norm`` (QB-Norm, dynamic inverted softmax): a bank of training captions scored against the same
  videos; works for a single query. Text-to-video only (video-to-text keeps the raw ranking).
- ``sinkhorn`` (SK-norm): normalises the whole test matrix to be doubly stochastic (transductive).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from xclip_pl.evaluate.retrieval import TieRule, retrieval_metrics


def _check(sim: Tensor, name: str = "sim") -> Tensor:
    if sim.dim() != 2:
        raise ValueError(f"{name} must be a [queries, gallery] matrix, got shape {tuple(sim.shape)}")
    if not torch.isfinite(sim).all():
        raise ValueError(f"{name} has non-finite entries")
    return sim.float() if sim.element_size() < 4 else sim


def dual_softmax(sim: Tensor, temperature: float = 1.0) -> Tensor:
    """Dual softmax / "inverted softmax" re-scoring (DSL, CAMoE, Cheng et al. 2021):
    ``sim * softmax(sim / temperature, dim=0)``.

    Each gallery item (column) gets a prior: a softmax over all *queries* of how strongly they pick it.
    A gallery item that many queries like (a hub) has its score spread thin and is demoted for the
    queries that are not its best match.

    Assumes: the whole test query set is available at once (transductive: a query's score depends on
    every other test query), and each query appears once (a repeated query shares the prior with its
    copy, starmemda/CAMoE#7). For multi-caption sets apply it before any per-video reshape. The
    constant factor ``len(sim)`` of CAMoE's training loss does not change rankings and is left out.
    """
    sim = _check(sim)
    return sim * torch.softmax(sim / temperature, dim=0)


def qb_norm(sim: Tensor, bank_sim: Tensor, k: int = 1, beta: float = 20.0) -> Tensor:
    """Querybank normalisation with the dynamic inverted softmax (QB-Norm, Bogolin et al., CVPR 2022).

    ``bank_sim`` [bank, gallery] holds the similarities of a bank of *training* queries (e.g. training
    captions) to the same gallery. The activation set is every gallery item that some bank query ranks
    in its top ``k``. A test query whose top-1 gallery item is in the activation set is re-scored by the
    inverted softmax ``exp(beta * s_g) / sum_bank exp(beta * bank_s_g)``; any other query row is returned
    unchanged. Normalised rows are returned as ``s_g - logsumexp_bank(beta * bank_s_g) / beta``, the log
    of that ratio divided by ``beta``: the same ranking, in the units of ``sim`` and always finite.

    Assumes: the bank comes from the same model and the same kind of query as ``sim`` (its similarities
    are on the same scale) and is not drawn from the test queries; it works one query at a time (not
    transductive). ``beta`` is in the units of ``sim`` (the paper's 20 is for similarities on a cosine
    scale; divide it by the logit scale for X-CLIP logits). Rankings along a row only.
    """
    sim, bank_sim = _check(sim), _check(bank_sim, "bank_sim")
    if bank_sim.shape[1] != sim.shape[1]:
        raise ValueError(f"bank_sim has {bank_sim.shape[1]} gallery columns, sim has {sim.shape[1]}")
    if not 1 <= k <= sim.shape[1]:
        raise ValueError(f"k must be in 1..{sim.shape[1]}, got {k}")
    bank_sim = bank_sim.to(sim.dtype)
    activated = torch.zeros(sim.shape[1], dtype=torch.bool, device=sim.device)
    activated[bank_sim.topk(k, dim=1).indices.reshape(-1)] = True  # gallery items some bank query retrieves
    rows = activated[sim.argmax(dim=1)]  # queries whose top-1 is a hub candidate
    penalty = torch.logsumexp(beta * bank_sim, dim=0) / beta  # [gallery]
    return torch.where(rows[:, None], sim - penalty, sim)


def sinkhorn(sim: Tensor, temperature: float = 1.0, iterations: int = 50) -> Tensor:
    """Sinkhorn-Knopp normalisation of ``exp(sim / temperature)`` (SK-norm; Yakovlev et al., SIGIR 2023;
    UCoFiA), computed in the log domain for stability.

    Alternately normalises rows and columns for ``iterations`` rounds, ending on rows, so that every
    row sums to 1 and every column to ``queries / gallery`` (for a square matrix: doubly stochastic).
    Like the dual softmax it balances how often each gallery item is retrieved.

    Assumes: the whole test query set at once (transductive), each gallery item a plausible match for
    roughly ``queries / gallery`` queries (the uniform column marginal), and a finite ``sim``.
    """
    sim = _check(sim)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    n, m = sim.shape
    log_col = torch.log(torch.tensor(n / m, dtype=sim.dtype, device=sim.device))
    log_p = sim / temperature
    for _ in range(iterations):
        log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True) + log_col  # columns sum to n / m
        log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)  # rows sum to 1
    return log_p.exp()


# ------------------------------------------------------------ test-time options over a similarity matrix

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
