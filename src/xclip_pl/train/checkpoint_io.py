"""``AtomicCheckpointIO``: a checkpoint file is either the complete old one or the complete new one (issue 14).

Lightning 2.6's ``TorchCheckpointIO`` serialises into memory, then writes through an fsspec transaction whose
temporary file is made by ``tempfile.mkstemp()`` in the system temp directory and moved over the target with
``shutil.move``. When that directory is on another file system (``/tmp`` on tmpfs, the run on a disk), the
move is a copy into the target path, so a kill during it leaves a truncated ``last.ckpt``; nothing is
fsynced, so a power cut can leave an empty file after the rename.

Here the checkpoint is written to ``.<name>.partial`` in the target's own directory, flushed and fsynced,
then renamed over the target with ``os.replace`` (atomic within one file system) and the directory fsynced.
A kill at any point leaves the previous checkpoint intact (and at most a stale ``.partial`` file, which the
next save of that name overwrites and :func:`xclip_pl.train.resume.find_last_checkpoint` ignores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike) -> Path:
    """Where the checkpoint for ``path`` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(partial: Path, path: Path) -> None:
    """Rename the complete ``partial`` file over ``path`` and make the rename durable."""
    os.replace(partial, path)
    _fsync_directory(path.parent)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` never holds a partly written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    with open(partial, "wb") as file:
        torch.save(obj, file)
        file.flush()
        os.fsync(file.fileno())
    commit(partial, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and durable (see the module docstring); remote paths
    (``s3://`` ...) are left to Lightning's fsspec transaction."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
                        ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options")
        atomic_torch_save(checkpoint, path)
