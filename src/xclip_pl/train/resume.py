"""``fit --ckpt_path last``: continue the latest run, in its own checkpoint directory and W&B run (issue 14).

Lightning resolves ``ckpt_path="last"`` inside the checkpoint directory of the run being started. With the W&B
logger that directory is ``<save_dir>/<project>/<run id>/checkpoints`` and every run gets a new id, so Lightning
never found the previous run's ``last.ckpt``, warned and trained from epoch 0. :func:`resolve_ckpt_path` looks
where every run of this configuration writes ``last.ckpt`` (the glob of :func:`last_checkpoint_glob`), takes
the most recently written one and makes the starting run continue it: the W&B logger gets that run's id
(``resume="allow"``), so checkpoints, history and the run page continue where they were. When there is no
``last.ckpt`` yet (a first run, or a job script that always passes ``last``) the run starts from scratch, after
a loud message naming where it looked; ``require_checkpoint`` makes that an error instead.

:func:`prepare_trainer` gives a trainer what an exact resume needs: the
:class:`~xclip_pl.callbacks.rng_state.ExactResume` callback and atomic checkpoint writes
(:class:`~xclip_pl.train.checkpoint_io.AtomicCheckpointIO`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from xclip_pl.callbacks.rng_state import ExactResume
from xclip_pl.loggers import XCLIPWandbLogger
from xclip_pl.train.checkpoint_io import AtomicCheckpointIO

LAST = "last"


def last_checkpoint_glob(trainer: pl.Trainer) -> tuple[Path, str]:
    """``(root, pattern)``: ``root.glob(pattern)`` lists the ``last.ckpt`` of every run that writes where
    ``trainer``'s checkpoint callback does (as ModelCheckpoint resolves its directory): ``checkpoint.dirpath``
    when set, else ``<logger save_dir>/<logger name>/<any version>/checkpoints`` with a logger, else
    ``<default_root_dir>/checkpoints``."""
    callback = trainer.checkpoint_callback
    last_name = "last.ckpt"
    if callback is not None:
        last_name = f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        if callback.dirpath:
            return Path(callback.dirpath), last_name
    if trainer.loggers:
        logger = trainer.loggers[0]
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name), f"*/checkpoints/{last_name}"
    return Path(trainer.default_root_dir) / "checkpoints", last_name


def find_last_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The most recently written ``last.ckpt`` among the runs of :func:`last_checkpoint_glob`, or None."""
    root, pattern = last_checkpoint_glob(trainer)
    found = [path for path in root.glob(pattern) if path.is_file()]
    return max(found, key=lambda path: path.stat().st_mtime) if found else None


def run_id_of(checkpoint: str | Path, trainer: pl.Trainer) -> str | None:
    """The logger version (the W&B run id) whose directory holds ``checkpoint``, if it lies in the logger's
    layout ``<save_dir>/<name>/<version>/checkpoints/``; None otherwise."""
    root, pattern = last_checkpoint_glob(trainer)
    path = Path(checkpoint).resolve()
    if not trainer.loggers or pattern.count("/") != 2 or path.parent.name != "checkpoints":
        return None
    return path.parent.parent.name if path.parent.parent.parent == root.resolve() else None


def continue_run(trainer: pl.Trainer, checkpoint: str | Path) -> str | None:
    """Make the W&B logger continue the run that wrote ``checkpoint`` (same id, so the same checkpoint
    directory); returns that id, or None when ``checkpoint`` is not in a W&B run's directory."""
    logger = trainer.logger
    run_id = run_id_of(checkpoint, trainer) if isinstance(logger, XCLIPWandbLogger) else None
    if run_id is not None:
        logger.resume_run(run_id)
    return run_id


def no_checkpoint_message(trainer: pl.Trainer) -> str:
    """What ``--ckpt_path last`` says when there is nothing to resume."""
    root, pattern = last_checkpoint_glob(trainer)
    return (f"--ckpt_path last: no checkpoint to resume, nothing matches {root / pattern}. "
            "STARTING A NEW RUN FROM EPOCH 0. (To resume, pass the save_dir / default_root_dir / checkpoint.dirpath "
            "of the run you want to continue, or --ckpt_path <file.ckpt>; --require_checkpoint true turns this "
            "into an error.)")


def resolve_ckpt_path(trainer: pl.Trainer, ckpt_path: str | None, require_checkpoint: bool = False) -> str | None:
    """The checkpoint ``fit`` should start from, with the logger set to continue its run.

    Args:
        trainer: the instantiated trainer (its logger and checkpoint callback say where runs write).
        ckpt_path: ``fit``'s ``--ckpt_path``: ``last`` (the latest run's ``last.ckpt``), a path (its run is
            continued when it lies in a W&B run directory), another Lightning keyword, or None.
        require_checkpoint: with ``last`` and nothing found, raise instead of starting a new run.
    """
    if ckpt_path is None or (ckpt_path != LAST and not Path(ckpt_path).is_file()):
        return ckpt_path  # a fresh run, or Lightning's other keywords (best, hpc, registry) / its own errors
    checkpoint = Path(ckpt_path) if ckpt_path != LAST else find_last_checkpoint(trainer)
    if checkpoint is None:
        message = no_checkpoint_message(trainer)
        if require_checkpoint:
            raise FileNotFoundError(message)
        if trainer.is_global_zero:
            print(f"\n{'!' * 100}\n{message}\n{'!' * 100}\n", file=sys.stderr, flush=True)
        return None
    run_id = continue_run(trainer, checkpoint)
    if trainer.is_global_zero:
        print(f"resuming from {checkpoint}" + (f" (W&B run {run_id})" if run_id else ""), flush=True)
    return str(checkpoint)


def prepare_trainer(trainer: pl.Trainer) -> pl.Trainer:
    """Add the :class:`ExactResume` callback (unless there is one) and make local checkpoint writes atomic
    (unless a custom checkpoint IO plugin is configured)."""
    if not any(isinstance(callback, ExactResume) for callback in trainer.callbacks):
        trainer.callbacks.append(ExactResume())
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    return trainer
