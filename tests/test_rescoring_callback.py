"""TestTimeRescoring: the re-scorings run at test only (never at validation), beside the raw metrics, logged
under their own names with the values of an independent computation (each method's published formula, and
ranks counted by loops)."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers_model import make_module, random_ids
from torch.utils.data import DataLoader

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.callbacks.rescoring import TestTimeRescoring

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
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1, eval_dtype="bf16")
    rescoring = TestTimeRescoring(options=["dsl", "qb_norm", "sinkhorn"], temperature=TEMPERATURE, qb_norm_bank_size=20,
                                  qb_norm_k=QB_K, qb_norm_beta=QB_BETA, sinkhorn_iterations=SK_ITERATIONS)
    scored = []  # every matrix the model scores: the test captions first, then the QB-Norm bank
    similarity = module.model.similarity
    monkeypatch.setattr(module.model, "similarity", lambda *a, **kw: scored.append(similarity(*a, **kw)) or scored[-1])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[rescoring])
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


# ------------------------------------------------------------------------- which stage runs the re-scorings
WORDS, FRAMES, SIZE = 8, 2, 32


class TinyEvalData(pl.LightningDataModule):
    """3 videos x 2 captions in memory, the loaders evaluation expects, and a counted QB-Norm bank."""

    eval_batch_size = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.frames = torch.randint(0, 256, (3, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
        self.ids, self.mask = random_ids(6, WORDS, lengths=[4, 8, 6])
        self.bank_calls = 0

    def _loaders(self) -> list[DataLoader]:
        videos = [{"frames": self.frames[i], "frame_mask": torch.ones(FRAMES, dtype=torch.bool), "video_index": i,
                   "video_ok": True} for i in range(3)]
        texts = [{"input_ids": self.ids[c], "attention_mask": self.mask[c], "text_index": c, "video_index": c // 2}
                 for c in range(6)]
        return [DataLoader(videos, batch_size=4), DataLoader(texts, batch_size=4)]

    def val_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._loaders()

    def caption_bank(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.bank_calls += 1
        return random_ids(size, WORDS, lengths=[5, 7])


def test_test_time_rescorings_run_in_test_only():
    module = make_module(clip="tiny", max_words=WORDS, max_frames=FRAMES, temporal_layers=1, eval_kernel="torch")
    data = TinyEvalData()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False,
                         callbacks=[TestTimeRescoring(options=["dsl", "qb_norm", "sinkhorn"], qb_norm_bank_size=4)])
    trainer.validate(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert "val/t2v/R@1" in logged
    assert not [k for k in logged if k.startswith(("val/dsl/", "val/qb_norm/", "val/sinkhorn/"))]
    assert data.bank_calls == 0  # the QB-Norm bank is never encoded at validation

    trainer.test(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert {"test/t2v/R@1", "test/dsl/t2v/R@1", "test/qb_norm/t2v/R@1", "test/sinkhorn/v2t/R@1"} <= logged
    assert data.bank_calls == 1


def test_without_the_callback_nothing_is_rescored():
    module = make_module(clip="tiny", max_words=WORDS, max_frames=FRAMES, temporal_layers=1, eval_kernel="torch")
    data = TinyEvalData()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.test(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert "test/t2v/R@1" in logged
    assert not [k for k in logged if k.startswith(("test/dsl/", "test/qb_norm/", "test/sinkhorn/"))]
    assert data.bank_calls == 0


def test_options_subset_and_the_printed_tables(caplog):
    module = make_module(clip="tiny", max_words=WORDS, max_frames=FRAMES, temporal_layers=1, eval_kernel="torch")
    data = TinyEvalData()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, callbacks=[TestTimeRescoring(options=["sinkhorn"])])
    with caplog.at_level("INFO"):
        trainer.test(module, datamodule=data, verbose=False)
    logged = set(trainer.callback_metrics)
    assert "test/sinkhorn/t2v/R@1" in logged and not [k for k in logged if k.startswith(("test/dsl/", "test/qb_norm/"))]
    assert data.bank_calls == 0  # no qb_norm: no bank
    text = caplog.text
    # the re-scoring's table is printed first, then the raw one (the module prints it after its hook returns)
    assert "test retrieval with sinkhorn (test-time re-scoring)" in text and "| t2v |" in text
    assert text.index("test retrieval with sinkhorn") < text.rindex("test retrieval\n")
