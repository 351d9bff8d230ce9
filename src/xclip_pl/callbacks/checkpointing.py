"""``XCLIPModelCheckpoint``: Lightning's ``ModelCheckpoint`` with a named rule for equal monitored values.

The reference selects its best epoch by validation t2v R@1 with ``>=`` (xclip-method.md 5.6): a later epoch
that ties the best replaces it. Lightning's ``ModelCheckpoint`` replaces only on a strictly better value, so
it keeps the earlier one. R@1 moves in steps of 100 / #queries (0.1 on 1,000 captions), so ties happen and
change which checkpoint is tested.

It also keeps ``last.ckpt`` the latest state: Lightning writes ``last`` only when it has just written a
(top-k) checkpoint, i.e. on an improvement, so ``last.ckpt`` otherwise stays the best epoch's copy and a
resume loses every epoch since (issue 14). With ``last_every_n_train_steps`` it also writes ``last.ckpt``
every N optimiser steps, so a killed run loses at most N steps (``fit --ckpt_path last`` resumes at the
batch after the checkpoint; see :mod:`xclip_pl.train.resume`).
"""
from __future__ import annotations

from typing import Literal

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import Tensor

CheckpointTies = Literal["earlier", "later"]


class XCLIPModelCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (every argument as there) plus ``ties``.

    Args:
        ties: which checkpoint wins when the monitored value equals the best kept so far (or the k-th best
            with ``save_top_k > 1``): ``later`` = the newer one replaces it (the reference's ``>=``; default),
            ``earlier`` = the older one stays (Lightning's strict comparison).
        last_every_n_train_steps: also write ``last.ckpt`` (only ``last``, not a best checkpoint) every this
            many training steps (``trainer.global_step``), mid-epoch included; None or 0 = only at the
            epoch-level checkpointing points. Needs ``save_last: true``.
        *args: positional arguments of ``ModelCheckpoint``.
        **kwargs: keyword arguments of ``ModelCheckpoint`` (``monitor``, ``mode``, ``save_top_k``, ...).
    """

    def __init__(self, *args, ties: CheckpointTies = "later", last_every_n_train_steps: int | None = None,
                 **kwargs) -> None:
        if ties not in ("earlier", "later"):
            raise ValueError(f"checkpoint.ties={ties!r}: expected 'earlier' (keep the older checkpoint on an equal "
                             "monitored value, Lightning) or 'later' (the newer one replaces it, the reference)")
        if last_every_n_train_steps is not None and last_every_n_train_steps < 0:
            raise ValueError(f"checkpoint.last_every_n_train_steps={last_every_n_train_steps}: expected None, 0 (off) "
                             "or a positive number of training steps")
        super().__init__(*args, **kwargs)
        if last_every_n_train_steps and self.save_last is not True:
            raise ValueError(f"checkpoint.last_every_n_train_steps={last_every_n_train_steps} writes last.ckpt: "
                             f"set checkpoint.save_last true (not {self.save_last!r})")
        self.ties = ties
        self.last_every_n_train_steps = last_every_n_train_steps or 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        every = self.last_every_n_train_steps
        if every and trainer.global_step % every == 0 and not self._should_skip_saving_checkpoint(trainer):
            saved_step = self._last_global_step_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            # a step checkpoint must not stop the epoch-level save at the same step (best and last after
            # validation), which Lightning skips once this step counts as saved
            self._last_global_step_saved = saved_step

    def check_monitor_top_k(self, trainer, current: Tensor | None = None) -> bool:
        """Whether ``current`` enters the top k; with ``ties: later`` an equal value enters too."""
        if self.ties == "earlier" or current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        at_least_as_good = {"min": torch.le, "max": torch.ge}[self.mode]
        decision = bool(at_least_as_good(current, self.best_k_models[self.kth_best_model_path]))
        return trainer.strategy.reduce_boolean_decision(decision)  # every rank decides the same

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        due = self._last_due(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if due:
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        due = self._last_due(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        if due:
            self._save_last_if_missed(trainer)

    def _last_due(self, trainer) -> bool:
        """Whether this hook is a checkpointing point at which ``save_last: true`` should write ``last``
        (decided before Lightning's hook runs, since its save marks the step as saved)."""
        return (self.save_last is True and not self._should_skip_saving_checkpoint(trainer)
                and self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0)

    def _save_last_if_missed(self, trainer) -> None:
        """Write ``last`` when Lightning's hook wrote nothing at this step (the monitored value did not enter
        the top k); when it did write, it wrote ``last`` as well."""
        if self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """With ``ties: later``, the best path is the newest of the equally best before anything is written
        (the saved callback state then names it too)."""
        if self.ties == "later" and self.best_k_models:
            self.best_model_path = _newest_best(self.best_k_models, self.mode)
            self.best_model_score = self.best_k_models[self.best_model_path]
        super()._save_checkpoint(trainer, filepath)


def _newest_best(scores: dict[str, Tensor], mode: str) -> str:
    """The last inserted (newest) path among those with the best score; insertion order is save order."""
    best = (min if mode == "min" else max)(scores.values())
    return [path for path, score in scores.items() if score == best][-1]
