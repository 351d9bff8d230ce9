"""Exact resume, in process (issue 14): ExactResume + the StatefulDataLoader reproduce an uninterrupted run's
batches and random numbers after an interruption mid-epoch and at an epoch end, with 0 and 2 loader workers;
`--ckpt_path last` finds the latest run's last.ckpt and continues its W&B run, or says loudly that it starts a
new one; AtomicCheckpointIO never leaves a partial file at the checkpoint's path. The end-to-end SIGKILL runs
are in tests/test_resume_e2e.py."""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from test_checkpointing import ScriptedScore
from torch.utils.data import Dataset, get_worker_info

from xclip_pl.callbacks.checkpointing import XCLIPModelCheckpoint
from xclip_pl.callbacks.rng_state import ExactResume
from xclip_pl.data.resumable import WorkerRNGState, resumable_loader, rng_states, set_rng_states
from xclip_pl.loggers import XCLIPWandbLogger
from xclip_pl.train.checkpoint_io import AtomicCheckpointIO, partial_path
from xclip_pl.train.resume import find_last_checkpoint, prepare_trainer, resolve_ckpt_path, run_id_of

# ------------------------------------------------------------------------------------- an exactly resumed run


class Interrupted(Exception):
    """Stands in for the kill (the checkpoints already written stay as they are)."""


class RandomItems(Dataset):
    """Item = (index, a random number drawn where the item is made: in a worker, or the main process)."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index), torch.rand(()).item()])


class Recorder(pl.LightningModule):
    """Logs every training step's batch and the main process's torch, numpy and python random numbers; its
    learning-rate schedule reads ``trainer.estimated_stepping_batches`` (builds the loader early, as ours do)."""

    def __init__(self, workers: int, interrupt_at: int = -1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.workers, self.interrupt_at = workers, interrupt_at
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        draws = (torch.rand(()).item(), float(np.random.rand()), random.random())
        self.seen.append((self.current_epoch, batch_idx, batch.tolist(), draws))
        return self.layer(batch).sum() * draws[0]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == self.interrupt_at:
            raise Interrupted

    def validation_step(self, batch, batch_idx):
        pass

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(2, 2))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        total = self.trainer.estimated_stepping_batches
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / total),
                                 "interval": "step"}}

    def train_dataloader(self):
        return resumable_loader(RandomItems(), batch_size=3, shuffle=True, num_workers=self.workers,
                                persistent_workers=self.workers > 0)


def train(directory: Path, workers: int, interrupt_at: int = -1, resume: bool = False) -> Recorder:
    """4 steps per epoch, 3 epochs, last.ckpt every 3 steps and after each validation."""
    pl.seed_everything(0)
    module = Recorder(workers, interrupt_at)
    checkpoint = XCLIPModelCheckpoint(dirpath=directory, save_last=True, last_every_n_train_steps=3)
    trainer = prepare_trainer(pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[checkpoint]))
    try:
        trainer.fit(module, ckpt_path=str(directory / "last.ckpt") if resume else None)
    except Interrupted:
        pass
    return module


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(("interrupt_at", "resumed_from"), [(7, 6), (5, 4)], ids=["mid-epoch", "epoch-end"])
def test_resumed_run_sees_the_uninterrupted_batches_and_random_numbers(tmp_path, workers, interrupt_at, resumed_from):
    # saves: every 3 steps (3, 6, 9, 12) and after each epoch's validation (4, 8, 12); the interruption comes
    # after the step's saves. After step 7: last.ckpt is step 6's (epoch 1, 2 of 4 batches done); after step 5:
    # step 4's, the end of epoch 0
    reference = train(tmp_path / "reference", workers)
    assert len(reference.seen) == 12
    first = train(tmp_path / "run", workers, interrupt_at=interrupt_at)
    assert len(first.seen) == interrupt_at
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"] == resumed_from
    resumed = train(tmp_path / "run", workers, resume=True)
    assert resumed.seen == reference.seen[resumed_from:]  # batches (worker draws included) and main-process draws
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name


def test_without_exact_resume_the_resumed_batches_differ(tmp_path):
    # the test above can fail: Lightning alone replays epoch 0 from its first batch (the loader state is lost
    # when estimated_stepping_batches builds the loader) and restarts the RNGs from the seed
    reference = train(tmp_path / "reference", 0)
    train(tmp_path / "run", 0, interrupt_at=7)
    pl.seed_everything(0)
    module = Recorder(0)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=[XCLIPModelCheckpoint(dirpath=tmp_path / "run", save_last=True)])
    trainer.fit(module, ckpt_path=str(tmp_path / "run" / "last.ckpt"))
    assert module.seen[0][:2] == reference.seen[6][:2]  # Lightning resumes at the right batch index,
    assert module.seen != reference.seen[6:]  # but not with the right batches and random numbers


def test_checkpoints_hold_rng_states_and_the_loader_position(tmp_path):
    train(tmp_path, 0, interrupt_at=7)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain types: loads with weights_only
    assert len(checkpoint["rng_states"]) == 1 and {"torch", "numpy", "python"} <= checkpoint["rng_states"][0].keys()
    [loader] = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["_num_yielded"] == 2  # the batches of epoch 1 trained before the step-6 save


def test_rng_states_round_trip():
    states = rng_states()
    drawn = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_states(states)
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(drawn[0], again[0]) and np.array_equal(drawn[1], again[1]) and drawn[2] == again[2]


def test_worker_rng_state_is_empty_in_the_main_process_and_passes_items_through():
    wrapped = WorkerRNGState(RandomItems())
    assert len(wrapped) == 12 and wrapped[3][0].item() == 3.0
    assert wrapped.state_dict() == {}
    assert get_worker_info() is None


# ------------------------------------------------------------------------------------- --ckpt_path last


def wandb_trainer(save_dir: Path) -> pl.Trainer:
    logger = XCLIPWandbLogger(save_dir=str(save_dir), project="proj", offline=True)
    return pl.Trainer(accelerator="cpu", logger=logger, default_root_dir=str(save_dir),
                      callbacks=[XCLIPModelCheckpoint(save_last=True)], enable_progress_bar=False)


def touch_checkpoint(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, path)
    os.utime(path, (mtime, mtime))
    return path


def test_last_finds_the_most_recent_run_and_continues_its_wandb_run(tmp_path):
    now = time.time()
    touch_checkpoint(tmp_path / "proj" / "old1" / "checkpoints" / "last.ckpt", now - 100)
    newest = touch_checkpoint(tmp_path / "proj" / "new22" / "checkpoints" / "last.ckpt", now)
    touch_checkpoint(tmp_path / "proj" / "new22" / "checkpoints" / ".last.ckpt.partial", now + 5)  # a killed save
    touch_checkpoint(tmp_path / "other" / "x" / "checkpoints" / "last.ckpt", now + 10)  # another project
    trainer = wandb_trainer(tmp_path)
    assert trainer.logger.version != "new22"
    assert resolve_ckpt_path(trainer, "last") == str(newest)
    assert trainer.logger.version == "new22" and trainer.logger._wandb_init["id"] == "new22"
    assert trainer.logger._wandb_init["resume"] == "allow"


def test_an_explicit_checkpoint_in_a_run_directory_continues_that_run(tmp_path):
    path = touch_checkpoint(tmp_path / "proj" / "abc" / "checkpoints" / "best-epoch1-step2.ckpt", time.time())
    trainer = wandb_trainer(tmp_path)
    assert resolve_ckpt_path(trainer, str(path)) == str(path)
    assert trainer.logger.version == "abc"
    assert run_id_of(tmp_path / "elsewhere" / "a.ckpt", trainer) is None


def test_last_with_nothing_to_resume_says_so_loudly_and_starts_fresh(tmp_path, capsys):
    trainer = wandb_trainer(tmp_path)
    version = trainer.logger.version
    assert resolve_ckpt_path(trainer, "last") is None  # Lightning then starts from scratch, as it would
    err = capsys.readouterr().err
    assert "no checkpoint to resume" in err and "STARTING A NEW RUN FROM EPOCH 0" in err
    assert str(tmp_path / "proj" / "*" / "checkpoints" / "last.ckpt") in err  # where it looked
    assert trainer.logger.version == version


def test_require_checkpoint_makes_a_missing_last_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        resolve_ckpt_path(wandb_trainer(tmp_path), "last", require_checkpoint=True)


def test_last_without_a_logger_looks_in_default_root_dir(tmp_path):
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=str(tmp_path),
                         callbacks=[XCLIPModelCheckpoint(save_last=True)])
    last = touch_checkpoint(tmp_path / "checkpoints" / "last.ckpt", time.time())
    assert find_last_checkpoint(trainer) == last
    assert resolve_ckpt_path(trainer, "last") == str(last)


def test_last_with_a_checkpoint_dirpath_looks_there(tmp_path):
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=str(tmp_path / "root"),
                         callbacks=[XCLIPModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)])
    last = touch_checkpoint(tmp_path / "ck" / "last.ckpt", time.time())
    assert resolve_ckpt_path(trainer, "last") == str(last)


def test_other_ckpt_paths_are_left_to_lightning(tmp_path):
    trainer = wandb_trainer(tmp_path)
    assert resolve_ckpt_path(trainer, None) is None
    assert resolve_ckpt_path(trainer, "best") == "best"
    assert resolve_ckpt_path(trainer, str(tmp_path / "missing.ckpt")) == str(tmp_path / "missing.ckpt")


def test_prepare_trainer_adds_exact_resume_once_and_atomic_io(tmp_path):
    trainer = prepare_trainer(prepare_trainer(pl.Trainer(accelerator="cpu", logger=False)))
    assert sum(isinstance(c, ExactResume) for c in trainer.callbacks) == 1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


# ------------------------------------------------------------------------------------- atomic writes


def test_atomic_save_replaces_the_file_and_leaves_no_partial(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (pickling a lambda fails half-way through the write)
        io.save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    stale = partial_path(path)
    assert stale.name == ".last.ckpt.partial"
    io.save_checkpoint({"step": 3}, path)  # a stale partial is simply overwritten by the next save
    assert torch.load(path, weights_only=True) == {"step": 3} and not stale.exists()


# ------------------------------------------------------------------------------------- step checkpoints


class StepLog(Callback):
    """At each training batch start: (global_step, the global_step held by last.ckpt or None)."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.records = directory, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        last = self.directory / "last.ckpt"
        self.records.append((trainer.global_step, torch.load(last, weights_only=True)["global_step"] if last.exists() else None))


class FiveSteps(ScriptedScore):
    """``ScriptedScore`` (tests/test_checkpointing.py) with five training steps per epoch."""

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(5, 1))


def test_last_every_n_train_steps_writes_last_mid_epoch_and_keeps_the_epoch_saves(tmp_path):
    log = StepLog(tmp_path)
    checkpoint = XCLIPModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max", save_last=True,
                                      filename="e{epoch}", auto_insert_metric_name=False, last_every_n_train_steps=2)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[log, checkpoint])
    trainer.fit(FiveSteps([10.0, 12.0]))
    # steps 2, 4 (mid-epoch 0), 5 (after validation), 6, 8 (epoch 1); read at the start of the next batch
    assert log.records == [(0, None), (1, None), (2, 2), (3, 2), (4, 4), (5, 5), (6, 6), (7, 6), (8, 8), (9, 8)]
    # step 10 is a step checkpoint and the epoch-end one: the best checkpoint (epoch 1) is still written
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["e1.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 10


@pytest.mark.parametrize("kwargs", [{"last_every_n_train_steps": -1}, {"last_every_n_train_steps": 2, "save_last": False},
                                    {"last_every_n_train_steps": 2, "save_last": "link"}])
def test_last_every_n_train_steps_arguments_are_checked(kwargs):
    with pytest.raises(ValueError, match="last_every_n_train_steps"):
        XCLIPModelCheckpoint(**kwargs)


# ------------------------------------------------------------------------------------- the CLI


def test_cli_fit_ckpt_path_last_with_require_checkpoint_stops_before_training(tmp_path):
    import yaml  # noqa: PLC0415

    from xclip_pl.cli import build_cli  # noqa: PLC0415

    config = {"trainer": {"accelerator": "cpu", "logger": False, "default_root_dir": str(tmp_path / "runs"),
                          "enable_progress_bar": False},
              "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}}},
              "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                       "init_args": {"root": str(tmp_path / "data"), "num_train": 8, "num_test": 6, "max_words": 16,
                                     "max_frames": 3, "image_size": 32, "batch_size": 4, "num_workers": 0}}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint to resume.*runs/checkpoints/last\.ckpt"):
        build_cli(["fit", "--config", str(path), "--ckpt_path", "last", "--require_checkpoint", "true"])
    assert not (tmp_path / "runs" / "checkpoints").exists()  # nothing trained
