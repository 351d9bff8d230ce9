"""``Throughput``: clips per second in training and evaluation, and peak GPU memory, logged as metrics.

A batch's clip count is its number of videos (``frames``), else of captions (``input_ids``), see
:func:`batch_items`. Rates are wall time between batches, data loading included: what a run achieves.
"""
from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


def batch_items(batch) -> tuple[str, int]:
    """``("clips", videos)`` for a batch with frames (training pairs, evaluation videos), else
    ``("captions", texts)``; ``("items", 0)`` for anything else."""
    if isinstance(batch, dict):
        for key, unit in (("frames", "clips"), ("input_ids", "captions")):
            if key in batch and hasattr(batch[key], "shape"):
                return unit, int(batch[key].shape[0])
    return "items", 0


class RateMeter:
    """Items over the wall time from :meth:`start` (or the first :meth:`add`) to the last :meth:`add`, so
    that what follows the last batch (validation after a training epoch) is not counted."""

    def __init__(self) -> None:
        self.items, self.began, self.last = 0, None, None

    def start(self) -> None:
        self.items, self.began, self.last = 0, time.perf_counter(), None

    def add(self, n: int) -> None:
        if self.began is None:
            self.start()
        self.items += n
        self.last = time.perf_counter()

    @property
    def seconds(self) -> float:
        return 0.0 if self.began is None or self.last is None else self.last - self.began

    @property
    def rate(self) -> float | None:
        """Items per second, None before anything was measured."""
        return self.items / self.seconds if self.items and self.seconds > 0 else None


class Throughput(Callback):
    """Training and evaluation throughput, peak GPU memory.

    Logged: ``train/clips_per_s`` (over the last ``trainer.log_every_n_steps`` steps, every that many
    steps), ``train/epoch_clips_per_s`` (each epoch), ``val/clips_per_s`` and ``test/clips_per_s``
    (videos encoded per second; caption batches are not counted), and on CUDA ``train/peak_gpu_mem_gib``
    (each training epoch, validation included) and ``test/peak_gpu_mem_gib`` (``torch.cuda.max_memory_allocated``,
    reset at each training epoch's start). The totals of ``fit`` (:attr:`train_clips`, :attr:`train_seconds`) feed the
    summary at the end of the command.
    """

    def __init__(self) -> None:
        self.window, self.epoch, self.eval = RateMeter(), RateMeter(), RateMeter()
        self.train_clips, self.train_seconds, self.peak_gpu_gib = 0, 0.0, None

    @property
    def clips_per_s(self) -> float | None:
        """Training clips per second over the whole ``fit`` (every epoch's batches)."""
        return self.train_clips / self.train_seconds if self.train_clips and self.train_seconds > 0 else None

    # ------------------------------------------------------------------------------------------ training
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.window.start()
        self.epoch.start()
        _reset_peak(pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        _, n = batch_items(batch)
        self.window.add(n)
        self.epoch.add(n)
        every = max(1, trainer.log_every_n_steps)
        if (batch_idx + 1) % every == 0 and self.window.rate is not None:
            pl_module.log("train/clips_per_s", self.window.rate, on_step=True, on_epoch=False)
            self.window.start()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_clips += self.epoch.items
        self.train_seconds += self.epoch.seconds
        if self.epoch.rate is not None:
            pl_module.log("train/epoch_clips_per_s", self.epoch.rate, on_step=False, on_epoch=True)
        self._log_peak(pl_module, "train")

    # --------------------------------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.eval.start()

    on_test_epoch_start = on_validation_epoch_start

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        unit, n = batch_items(batch)
        if unit == "clips":
            self.eval.add(n)

    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        stage = "test" if trainer.testing else "val"
        if self.eval.rate is not None:
            pl_module.log(f"{stage}/clips_per_s", self.eval.rate)
        if stage == "test":
            self._log_peak(pl_module, stage)

    on_test_epoch_end = on_validation_epoch_end

    def _log_peak(self, pl_module: pl.LightningModule, stage: str) -> None:
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
            self.peak_gpu_gib = max(peak, self.peak_gpu_gib or 0.0)
            pl_module.log(f"{stage}/peak_gpu_mem_gib", peak)


def _reset_peak(pl_module: pl.LightningModule) -> None:
    if pl_module.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pl_module.device)
