"""Retrieval examples for W&B: the top videos of the first captions, as a table of frame strips."""
from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import wandb
from pytorch_lightning.loggers import WandbLogger

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.examples import frame_strip, top_retrievals
from xclip_pl.module import XCLIPRetrieval


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


def test_test_run_logs_an_examples_table(tmp_path, monkeypatch):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    module = XCLIPRetrieval(clip="tiny", max_words=16, max_frames=3, temporal_layers=1, log_examples=4)
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, mode="disabled")
    tables = []
    monkeypatch.setattr(logger, "log_table", lambda key, columns, data: tables.append((key, columns, data)))
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.test(module, datamodule=datamodule, verbose=False)
    assert len(tables) == 1
    key, columns, data = tables[0]
    assert key == "test/examples" and len(data) == 4 and len(columns) == 2 + 3 * 3
    captions = [caption for _, caption in datamodule.test_dataloader()[1].dataset.pairs[:4]]
    assert [row[0] for row in data] == captions  # the first four test captions, in order
    for row in data:
        assert all(isinstance(image, wandb.Image) for image in [row[1], *row[2::3]])
        assert all(isinstance(value, bool) for value in row[4::3])  # "correct" columns
        assert sum(row[4::3]) <= 1  # the right video appears at most once among the top 3
        scores = row[3::3]
        assert scores == sorted(scores, reverse=True)
