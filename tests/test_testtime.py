"""Test-time re-scoring options run beside the raw metrics and are logged under their own names, with the
values of an independent computation (each method's published formula, and ranks counted by loops)."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.module import XCLIPRetrieval

TEMPERATURE, QB_K, QB_BETA, SK_ITERATIONS = 1.0, 1, 20.0, 50


def dual_softmax_reference(sim: np.ndarray, temperature: float) -> np.ndarray:
    """CAMoE / TS2-Net: ``sims * softmax(sims / T, dim=0)`` with queries along rows."""
    e = np.exp((sim - sim.max(axis=0, keepdims=True)) / temperature)
    return sim * e / e.sum(axis=0, keepdims=True)


def qb_norm_reference(bank: np.ndarray, sim: np.ndarray, k: int, beta: float) -> np.ndarray:
    """QB-Norm's dynamic inverted softmax (the authors' ``qb_norm(train_test, test_test)``), in float64."""
    retrieved = np.unique(np.argsort(-bank, axis=1)[:, :k].reshape(-1))
    out = sim.copy()
    normalizing_sum = np.exp(bank * beta).sum(axis=0)
    for i in range(len(sim)):
        if np.argmax(sim[i]) in retrieved:
            out[i] = np.exp(sim[i] * beta) / normalizing_sum
    return out


def sinkhorn_reference(sim: np.ndarray, temperature: float, iterations: int) -> np.ndarray:
    """Plain Sinkhorn-Knopp on ``exp(sim / T)``: columns to ``n / m``, then rows to 1, ``iterations`` times."""
    p = np.exp(sim / temperature)
    n, m = p.shape
    for _ in range(iterations):
        p = p / p.sum(axis=0, keepdims=True) * (n / m)
        p = p / p.sum(axis=1, keepdims=True)
    return p


def ranks_by_loops(scores: np.ndarray, positive: list[int]) -> list[int]:
    """Rank of each row's positive column, ties counted against it (pessimistic)."""
    ranks = []
    for i, pos in enumerate(positive):
        ranks.append(1 + sum(1 for j in range(scores.shape[1]) if j != pos and scores[i, j] >= scores[i, pos]))
    return ranks


def metrics_from_ranks(direction: str, ranks: list[int]) -> dict[str, float]:
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"{direction}/R@{k}": 100.0 * float((r <= k).mean()) for k in (1, 5, 10)}
    return out | {f"{direction}/MdR": float(np.median(r)), f"{direction}/MnR": float(r.mean())}


def expected_metrics(t2v: np.ndarray, v2t: np.ndarray, caption_video: list[int]) -> dict[str, float]:
    """1:1 data: t2v ranks the rows of ``t2v``; v2t ranks the columns of ``v2t``."""
    assert sorted(caption_video) == list(range(len(caption_video)))  # one caption per video
    video_caption = [caption_video.index(j) for j in range(v2t.shape[1])]
    t2v_ranks, v2t_ranks = ranks_by_loops(t2v, caption_video), ranks_by_loops(v2t.T, video_caption)
    return metrics_from_ranks("t2v", t2v_ranks) | metrics_from_ranks("v2t", v2t_ranks)


def test_dsl_qbnorm_sinkhorn_are_logged_separately(tmp_path, monkeypatch):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    module = XCLIPRetrieval(clip="tiny", max_words=16, max_frames=3, temporal_layers=1, log_examples=0,
                            test_time=["dsl", "qb_norm", "sinkhorn"], qb_norm_bank_size=20, eval_dtype="bf16",
                            test_time_temperature=TEMPERATURE, qb_norm_k=QB_K, qb_norm_beta=QB_BETA,
                            sinkhorn_iterations=SK_ITERATIONS)
    scored = []  # every matrix the model scores: the test captions first, then the QB-Norm bank
    similarity = module.model.similarity
    monkeypatch.setattr(module.model, "similarity", lambda *a, **kw: scored.append(similarity(*a, **kw)) or scored[-1])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    caption_video = [int(v) for batch in datamodule.test_dataloader()[1] for v in batch["video_index"]]
    assert len(scored) == 2 and scored[0].shape == (6, 6) and scored[1].shape == (20, 6)
    sim, bank = (s.double().numpy() for s in scored)
    raw = expected_metrics(sim, sim, caption_video)
    expected = {
        "dsl": expected_metrics(dual_softmax_reference(sim, TEMPERATURE), dual_softmax_reference(sim.T, TEMPERATURE).T,
                                caption_video),
        "qb_norm": expected_metrics(qb_norm_reference(bank, sim, QB_K, QB_BETA), sim, caption_video),  # t2v only
        "sinkhorn": expected_metrics(sinkhorn_reference(sim, TEMPERATURE, SK_ITERATIONS),
                                     sinkhorn_reference(sim.T, TEMPERATURE, SK_ITERATIONS).T, caption_video),
    }
    assert {k[len("test/"):]: v for k, v in metrics.items() if k[len("test/"):] in raw} == pytest.approx(raw)
    for option, want in expected.items():
        assert want != raw, f"{option} does not change any metric on this data: the check would be vacuous"
        got = {k[len(f"test/{option}/"):]: v for k, v in metrics.items() if k.startswith(f"test/{option}/")}
        assert got == pytest.approx(want), option
