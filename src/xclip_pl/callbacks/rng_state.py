"""``ExactResume``: a resumed run continues exactly where the checkpoint was taken (issue 14).

Lightning 2.6 saves the model, optimiser, schedulers, loop counters and the state of a stateful training
loader (torchdata's ``StatefulDataLoader``, see :mod:`xclip_pl.data.resumable`), but not the process's random
number generators, and it misses two loader cases. This callback

* saves the RNG states of every rank (torch CPU, every CUDA device, numpy, python ``random``) in each
  checkpoint, under ``rng_states`` (one entry per rank);
* restores them when training starts from a checkpoint, at the point of the loop where the uninterrupted run
  was when it saved: mid-epoch after the restored loader made its first batch (which the uninterrupted run
  had prefetched before saving), after an epoch's last batch before the next epoch's loader iterator is made
  (which draws the worker base seed from the torch RNG);
* (re)loads the training loader's saved state at that point. Lightning loads it only if the loader was not
  built before the checkpoint was restored, but ``trainer.estimated_stepping_batches`` (the learning-rate
  schedules) builds it earlier, so the state was silently dropped and a mid-epoch resume replayed the epoch
  from its first batch (Lightning issue #20550). A checkpoint taken after an epoch's last batch holds a
  finished iterator: it is restored and the next epoch's iterator made from it, so the next epoch neither
  replays the finished epoch's order nor runs empty.

The sampler's generator and the worker base seed are part of the loader state; each worker's own RNG states
are kept by :class:`xclip_pl.data.resumable.WorkerRNGState`. The CLI adds this callback to every trainer.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_warn

from xclip_pl.data.resumable import rng_states, set_rng_states

CHECKPOINT_KEY = "rng_states"


def process_rng_states() -> dict[str, Any]:
    """This process's RNG states: torch CPU, numpy, python and, when CUDA is available, every CUDA device's."""
    states = rng_states()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_process_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`process_rng_states` returned (CUDA states only on a machine with as many devices)."""
    set_rng_states(states)
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def _all_ranks(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's ``state``, in rank order (every rank calls this when a checkpoint is saved)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


class ExactResume(Callback):
    """Saves every rank's RNG states in each checkpoint; on resume restores them and the training loader's
    position at the point where the uninterrupted run was (see the module docstring)."""

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []
        self._epoch_done = False

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = _all_ranks(process_rng_states())

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep what :meth:`on_train_start` restores (only when fitting: ``test --ckpt_path`` restores nothing)."""
        if trainer.state.fn != TrainerFn.FITTING:
            return
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))
        self._epoch_done = bool(fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch", False))
        self._rng = self._rank_states(trainer, checkpoint.get(CHECKPOINT_KEY))

    @staticmethod
    def _rank_states(trainer: pl.Trainer, saved: list[dict[str, Any]] | None) -> dict[str, Any] | None:
        if not saved:
            rank_zero_warn("the checkpoint holds no RNG states (written without ExactResume): the resumed run's "
                           "random numbers will differ from an uninterrupted run's")
            return None
        if len(saved) != trainer.world_size:
            rank_zero_warn(f"the checkpoint holds RNG states of {len(saved)} ranks, this run has {trainer.world_size}: "
                           "RNG states not restored, the resumed run's random numbers will differ")
            return None
        return saved[trainer.global_rank]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        reload = bool(self._loader_states) and fit_loop._combined_loader is not None and fit_loop._data_fetcher is not None
        if reload:
            fit_loop._combined_loader._load_state_dicts(self._loader_states)
            fit_loop._combined_loader_states_to_load = []  # what Lightning would load (or has loaded): done here
            if self._epoch_done:
                _open_finished_epoch(fit_loop._combined_loader)
            else:
                iter(fit_loop._data_fetcher)  # the restored iterator; prefetches the next batch
        if self._rng is not None:
            set_process_rng_states(self._rng)
        if reload and self._epoch_done:
            iter(fit_loop._data_fetcher)  # the next epoch's iterator, from the restored RNG as uninterrupted
        self._rng, self._loader_states, self._epoch_done = None, [], False


def _open_finished_epoch(combined_loader) -> None:
    """Make each stateful loader's restored iterator, of an epoch whose last batch was already trained (which
    fast-forwards its sampler to the end of that epoch), so that the next ``iter`` starts the next epoch from
    the sampler state the finished epoch left, as the uninterrupted run's next ``iter`` did."""
    for loader in combined_loader.flattened:
        if hasattr(loader, "load_state_dict"):
            iter(loader)
