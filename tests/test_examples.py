"""RetrievalExamples: the top videos of the first captions, logged to W&B as images of frame strips."""
from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import wandb
from helpers_model import make_module
from pytorch_lightning.loggers import WandbLogger

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.callbacks.examples import RetrievalExamples, frame_strip, stack_strips, top_retrievals


@pytest.fixture(autouse=True)
def _no_wandb_run_left_behind():
    """Finish the disabled runs these tests start: a run left in ``wandb.run`` is what the next WandbLogger of the
    process would reuse (Lightning takes ``wandb.run`` when one is in progress), with its non-existent directory."""
    yield
    wandb.finish()


def test_top_retrievals_follow_caption_order():
    rows = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3], [0.0, 0.4, 0.8]])
    caption_index = torch.tensor([4, 0, 2])  # this rank's rows are captions 4, 0, 2
    caption_video = torch.tensor([1, 0, 1])
    got = top_retrievals(rows, caption_index, caption_video, queries=2, top=2)
    assert [(r.caption_index, r.true_video, r.videos) for r in got] == [(0, 0, [0, 2]), (2, 1, [2, 1])]
    assert got[0].scores == [float(torch.tensor(0.7)), float(torch.tensor(0.3))]


def test_frame_strip_shape_and_missing_video():
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(5)[:, None, None] * 50
    strip = frame_strip(frames, np.array([True, True, True, False, False]), count=4, height=16)
    assert strip.shape == (16, 3 * 16, 3) and strip.dtype == np.uint8  # 3 decoded frames, all shown
    assert [int(strip[0, 16 * k, 0]) for k in range(3)] == [0, 50, 100]
    empty = frame_strip(frames, np.zeros(5, bool), height=16)
    assert empty.shape == (16, 16, 3) and (empty == 128).all()


def test_stack_strips():
    a, b = np.zeros((4, 8, 3), np.uint8), np.ones((4, 12, 3), np.uint8)
    out = stack_strips([a, b], gap=2)
    assert out.shape == (10, 12, 3)
    assert (out[:4, :8] == 0).all() and (out[4:6] == 255).all() and (out[6:] == 1).all() and (out[:4, 8:] == 255).all()


def synthetic(tmp_path) -> SyntheticDataModule:
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    return datamodule


def recording_wandb(tmp_path, monkeypatch) -> tuple[WandbLogger, list]:
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, mode="disabled")
    logged = []
    monkeypatch.setattr(logger, "log_image", lambda key, images, caption: logged.append((key, images, caption)))
    return logger, logged


def test_test_run_logs_example_images(tmp_path, monkeypatch):
    datamodule = synthetic(tmp_path)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    logger, logged = recording_wandb(tmp_path, monkeypatch)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RetrievalExamples(num_examples=4)])
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert len(logged) == 1
    key, images, captions = logged[0]
    assert key == "test/examples" and len(images) == len(captions) == 4
    pairs = datamodule.test_dataloader()[1].dataset.pairs[:4]
    for image, text, (video_index, caption) in zip(images, captions, pairs):  # the first four test captions, in order
        assert image.dtype == np.uint8 and image.shape[0] == 4 * 64 + 3 * 4  # right video + top 3, 64-pixel strips
        assert text.startswith(f'"{caption}"') and datamodule.eval_video_id("test", video_index) in text
        assert text.count(", right)") <= 1


def test_validation_logs_val_examples_and_the_default_is_eight(tmp_path, monkeypatch):
    datamodule = synthetic(tmp_path)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    logger, logged = recording_wandb(tmp_path, monkeypatch)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RetrievalExamples()])
    trainer.validate(module, datamodule=datamodule, verbose=False)
    assert [(key, len(images)) for key, images, _ in logged] == [("val/examples", 6)]  # 8 asked, 6 captions


def test_no_images_without_the_callback_with_zero_examples_or_without_wandb(tmp_path, monkeypatch):
    datamodule = synthetic(tmp_path)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    for callbacks in ([], [RetrievalExamples(num_examples=0)]):
        logger, logged = recording_wandb(tmp_path, monkeypatch)
        trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False,
                             default_root_dir=str(tmp_path), callbacks=callbacks)
        trainer.test(module, datamodule=datamodule, verbose=False)
        assert logged == [], callbacks
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RetrievalExamples(num_examples=4)])
    trainer.test(module, datamodule=datamodule, verbose=False)  # no W&B logger: nothing to log to, no error
    assert "test/t2v/R@1" in trainer.callback_metrics


def test_online_runs_get_a_table_with_an_image_per_query(tmp_path, monkeypatch):

    datamodule = synthetic(tmp_path)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    logger = WandbLogger(save_dir=str(tmp_path), offline=False, mode="disabled")  # online as far as the callback knows
    tables, images = [], []
    monkeypatch.setattr(logger, "log_table", lambda key, columns, data: tables.append((key, columns, data)))
    monkeypatch.setattr(logger, "log_image", lambda key, images_, caption: images.append(key))
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RetrievalExamples(num_examples=3)])
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert images == [] and len(tables) == 1
    key, columns, data = tables[0]
    assert key == "test/examples" and columns == ["query", "right video", "retrieved", "frames"] and len(data) == 3
    pairs = datamodule.test_dataloader()[1].dataset.pairs[:3]
    for row, (video_index, caption) in zip(data, pairs):
        assert row[0] == caption and row[1] == datamodule.eval_video_id("test", video_index)
        assert row[2].startswith("1. ") and isinstance(row[3], wandb.Image)
