"""Distributed evaluation on 2 CPU processes (gloo) gives exactly the single-process metrics, with a number
of videos (7) and captions (23) that does not divide by the number of processes."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers_media import write_video
from helpers_model import make_module

from datamodules.folder import FolderDataModule

CAPTIONS_PER_VIDEO = [5, 4, 3, 3, 3, 3, 2]  # 7 videos, 23 captions


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    rows = []
    for v, count in enumerate(CAPTIONS_PER_VIDEO):
        write_video(root / f"val{v}.mp4", num_frames=16, seed=v)
        rows += [(f"val{v}.mp4", f"clip {v} caption {k} with a bar", "val") for k in range(count)]
    for t in range(4):
        write_video(root / f"train{t}.mp4", num_frames=16, seed=10 + t)
        rows.append((f"train{t}.mp4", f"a training clip {t}", "train"))
    with open(root / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("video", "caption", "split"), *rows])
    return root


def validate(root: Path, tmp: Path, devices: int) -> dict[str, float]:
    torch.manual_seed(0)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    datamodule = FolderDataModule(root=str(root), annotations="captions.csv", max_words=16, max_frames=3,
                                  image_size=32, batch_size=2, eval_batch_size=2, num_workers=0,
                                  tokenizer_dir=str(tmp / "tok"))
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp / f"run{devices}"))
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_two_processes_equal_one(root, tmp_path):
    single = validate(root, tmp_path, devices=1)
    double = validate(root, tmp_path, devices=2)
    assert single["val/num_videos"] == 7 and single["val/num_captions"] == 23
    assert double == single
    assert {"val/t2v/R@1", "val/v2t/R@1", "val/v2t_group_max/R@1"} <= single.keys()
