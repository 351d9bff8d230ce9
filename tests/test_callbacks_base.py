"""RetrievalCallback.on_retrieval_end: the module hands each evaluation's RetrievalResult to its callbacks after
the raw metrics are logged (not during the sanity check), and ``pl_module.log`` works there."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from helpers_model import make_module

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.callbacks.base import RetrievalCallback
from xclip_pl.evaluate.result import RetrievalResult
from xclip_pl.evaluate.retrieval import retrieval_metrics


class Recorder(RetrievalCallback):
    """Keeps every result, the raw metrics already logged when it was called, and logs a key of its own."""

    def __init__(self) -> None:
        self.results: list[RetrievalResult] = []
        self.seen_logged: list[set[str]] = []

    def on_retrieval_end(self, trainer, pl_module, result) -> None:
        self.results.append(result)
        self.seen_logged.append(set(trainer.callback_metrics))
        pl_module.log(f"{result.stage}/observed_captions", float(len(result.caption_index)))


@pytest.fixture()
def datamodule(tmp_path) -> SyntheticDataModule:
    dm = SyntheticDataModule(root=str(tmp_path / "data"), num_train=8, num_test=6, max_words=16, max_frames=3,
                             image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    dm.prepare_data()
    return dm


def test_results_of_validation_and_test_reach_the_callback(tmp_path, datamodule):
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1, eval_kernel="torch")
    recorder = Recorder()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path), max_epochs=1,
                         limit_train_batches=1, num_sanity_val_steps=2,
                         callbacks=[recorder, pl.callbacks.Timer()])  # a callback without the hook
    trainer.fit(module, datamodule=datamodule)
    assert [r.stage for r in recorder.results] == ["val"]  # the sanity check publishes nothing
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert [r.stage for r in recorder.results] == ["val", "test"]
    assert "test/t2v/R@1" in recorder.seen_logged[-1]  # called after the raw metrics were logged
    assert float(trainer.callback_metrics["test/observed_captions"]) == 6.0  # logging from the hook works

    result = recorder.results[-1]
    caption_video = torch.tensor([int(v) for batch in datamodule.test_dataloader()[1] for v in batch["video_index"]])
    assert result.rows.shape == (6, 6) and result.rows.dtype == torch.float32
    assert torch.equal(result.row_positions, torch.arange(6)) and torch.equal(result.caption_index, torch.arange(6))
    assert torch.equal(result.row_caption_video, caption_video) and torch.equal(result.caption_video, caption_video)
    assert not result.missing_videos.any() and len(result.text) == 6 and len(result.video) == 6
    assert result.ties == "pessimistic" and result.v2t_multi_caption == "standard"
    expected = retrieval_metrics(result.rows, caption_video, "pessimistic")
    assert result.metrics == pytest.approx(expected)
    assert {k: float(trainer.callback_metrics[f"test/{k}"]) for k in expected} == pytest.approx(expected)
    with torch.no_grad():
        again = module.model.similarity(result.text, result.video, kernel="torch").float()
    assert torch.allclose(result.rows, again, atol=1e-5)
