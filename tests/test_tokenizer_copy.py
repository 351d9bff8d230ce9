"""TokenizerCopy: at the start of fit, the datamodule's tokenizer is written beside the checkpoint directory."""
from __future__ import annotations

import pytorch_lightning as pl
from helpers_model import make_module
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.callbacks.tokenizer import TokenizerCopy
from xclip_pl.data.tokenizer import load_tokenizer


def fit_one_step(tmp_path, datamodule, callbacks, checkpointing: bool = True) -> None:
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), max_steps=1, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_checkpointing=checkpointing, callbacks=callbacks)
    trainer.fit(module, datamodule=datamodule)


def test_tokenizer_is_copied_beside_the_checkpoints(tmp_path):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=8, num_test=4, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    run = tmp_path / "run"
    fit_one_step(tmp_path, datamodule, [ModelCheckpoint(dirpath=str(run / "checkpoints")), TokenizerCopy()])
    assert sorted(p.name for p in (run / "tokenizer").iterdir()) == ["merges.txt", "vocab.json"]
    copy = load_tokenizer(run / "tokenizer")
    assert copy.get_vocab() == datamodule.tokenizer.get_vocab()
    caption = "a red disc moving left"
    assert copy(caption)["input_ids"] == datamodule.tokenizer(caption)["input_ids"]


def test_nothing_is_written_without_the_callback_or_without_checkpoints(tmp_path):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=8, num_test=4, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    fit_one_step(tmp_path / "a", datamodule, [ModelCheckpoint(dirpath=str(tmp_path / "a" / "checkpoints"))])
    assert not (tmp_path / "a" / "tokenizer").exists()
    fit_one_step(tmp_path / "b", datamodule, [TokenizerCopy()], checkpointing=False)
    assert not [p for p in tmp_path.rglob("tokenizer") if p.is_dir() and (p / "vocab.json").exists()
                and "data" not in p.relative_to(tmp_path).parts]
