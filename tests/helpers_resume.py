"""Test-only callbacks for tests/test_resume.py, loaded by the `xclip-pl fit` subprocesses it kills (the test
puts tests/ on their PYTHONPATH). Each one stops the run at a chosen training step, writes a marker file saying
so and then sleeps until the test SIGKILLs the process; nothing here changes what the run computes."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


def _stop_here(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    while True:  # until SIGKILL
        time.sleep(1)


class PauseAtStep(Callback):
    """After training step ``step`` (``trainer.global_step == step``), before that step's checkpoint (the
    checkpoint callbacks run after every other callback), write ``marker`` and wait to be killed."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, marker

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            _stop_here(self.marker)


class PauseInCheckpointSave(Callback):
    """Wait to be killed in the middle of writing ``last.ckpt`` at training step ``step``.

    ``phase`` = ``before_rename``: the new checkpoint is completely written (and fsynced) to its ``.partial``
    file, the rename over ``last.ckpt`` has not happened. ``during_write``: half of the serialised checkpoint
    has reached the ``.partial`` file."""

    def __init__(self, step: int, marker: str, phase: str = "before_rename") -> None:
        self.step, self.marker, self.phase = step, marker, phase

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        from xclip_pl.train import checkpoint_io  # noqa: PLC0415

        def due(path) -> bool:
            return trainer.global_step == self.step and Path(path).name.startswith(".last")

        if self.phase == "before_rename":
            commit = checkpoint_io.commit

            def paused_commit(partial, path):
                if due(partial):
                    _stop_here(self.marker)
                commit(partial, path)

            checkpoint_io.commit = paused_commit
        else:
            checkpoint_io.torch = _HalfWriteTorch(checkpoint_io.torch, due, self.marker)


class _HalfWriteTorch:
    """Stands in for the ``torch`` module inside xclip_pl.train.checkpoint_io: ``save`` to a due file writes
    half of the bytes, flushes them and waits to be killed; everything else is torch's."""

    def __init__(self, torch_module, due, marker: str) -> None:
        self._torch, self._due, self._marker = torch_module, due, marker

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def save(self, obj, file) -> None:
        if not self._due(file.name):
            self._torch.save(obj, file)
            return
        import io  # noqa: PLC0415

        buffer = io.BytesIO()
        self._torch.save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
        _stop_here(self._marker)
