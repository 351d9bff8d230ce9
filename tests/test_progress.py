"""XCLIPProgressBar: plain log lines with clips/s off a terminal; Throughput: clips/s metrics."""
from __future__ import annotations

import io
import re

import pytorch_lightning as pl
import torch
from helpers_model import make_module

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.callbacks.progress import LineBar, XCLIPProgressBar
from xclip_pl.callbacks.throughput import RateMeter, Throughput, batch_items


def test_line_bar_prints_every_n_steps_and_at_the_end():
    out = io.StringIO()
    bar = LineBar("Epoch 0", every=3, file=out)
    bar.reset(total=7)
    for _ in range(7):
        bar.postfix["clips/s"] = "12.5"
        bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(",")[0].split(" (")[0] for line in lines] == ["Epoch 0: 3/7", "Epoch 0: 6/7", "Epoch 0: 7/7"]
    assert all("12.5 clips/s" in line and "\r" not in line for line in lines)
    assert lines[-1].startswith("Epoch 0: 7/7 (100%) 0:00:00<0:00:00")


def test_batch_items_and_rate_meter():
    assert batch_items({"frames": torch.zeros(5, 2), "input_ids": torch.zeros(5, 3)}) == ("clips", 5)
    assert batch_items({"input_ids": torch.zeros(4, 3)}) == ("captions", 4)
    assert batch_items([1, 2]) == ("items", 0)
    meter = RateMeter()
    assert meter.rate is None
    meter.start()
    meter.add(10)
    assert meter.rate is not None and meter.rate > 0 and meter.items == 10


def test_fit_off_a_terminal_prints_lines_with_clips_per_second(tmp_path, capsys):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()  # the synthetic videos' own tqdm bar, before what is checked
    capsys.readouterr()
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    throughput = Throughput()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, log_every_n_steps=1, enable_checkpointing=False,
                         callbacks=[XCLIPProgressBar(log_every_n_steps=2, mode="auto"), throughput])
    trainer.fit(module, datamodule=datamodule)  # pytest's captured stdout is not a terminal: lines
    err = capsys.readouterr().err
    train = [line for line in err.splitlines() if line.startswith("Epoch 0: ")]
    steps = [re.match(r"Epoch 0: (\d+)/(\d+) ", line).groups() for line in train]
    total = int(steps[0][1])  # pairs of 12 videos' captions, 4 a batch
    assert [int(n) for n, _ in steps] == [*range(2, total, 2), total], err
    assert all(re.search(r"[\d.]+ clips/s", line) and "train/loss=" in line for line in train), train
    val = [line for line in err.splitlines() if line.startswith("Validation DataLoader")]
    assert [("clips/s" in line, "captions/s" in line) for line in val] == [(True, False), (False, True)], val
    assert "\r" not in err
    assert float(trainer.callback_metrics["train/clips_per_s"]) > 0
    assert float(trainer.callback_metrics["train/epoch_clips_per_s"]) > 0
    assert float(trainer.callback_metrics["val/clips_per_s"]) > 0
    assert throughput.train_clips == len(trainer.train_dataloader.dataset) and throughput.clips_per_s > 0


def test_bar_mode_keeps_lightnings_tqdm_with_clips_per_second(tmp_path):
    bar = XCLIPProgressBar(mode="bar")
    assert not bar.lines and XCLIPProgressBar(mode="lines").lines
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=8, num_test=4, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, limit_val_batches=0, enable_checkpointing=False, callbacks=[bar])
    trainer.fit(module, datamodule=datamodule)
    assert not isinstance(bar.train_progress_bar, LineBar)
    assert "clips/s" in bar.get_metrics(trainer, module)


def test_convert_steps_are_plain_lines(capsys):
    from xclip_pl.tools.convert import _step

    with _step("writing x"):
        pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "convert: writing x ..." and re.fullmatch(r"convert: writing x: done in [\d.]+ s", err[1])


def test_a_disabled_progress_bar_drops_the_recipes_progress_callback():
    from jsonargparse import Namespace

    from xclip_pl.cli import _drop_progress_bar_if_disabled

    bar = Namespace(class_path="xclip_pl.callbacks.progress.XCLIPProgressBar")
    other = Namespace(class_path="xclip_pl.callbacks.throughput.Throughput")
    trainer = Namespace(enable_progress_bar=False, callbacks=[other, bar])
    _drop_progress_bar_if_disabled(trainer)
    assert trainer.callbacks == [other]
    trainer = Namespace(enable_progress_bar=None, callbacks=[other, bar])
    _drop_progress_bar_if_disabled(trainer)
    assert trainer.callbacks == [other, bar]
