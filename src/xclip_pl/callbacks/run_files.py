"""Where the callbacks that observe a run put their files, and how they reach the W&B run.

The run directory is the parent of the checkpoint directory: ``runs/<name>/<project>/<run id>/`` under the
W&B logger (beside ``checkpoints/`` and ``tokenizer/``), ``<default_root_dir>/`` without a logger. Files
written there exist whether W&B is on, offline or off.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger


def run_directory(trainer: pl.Trainer) -> Path:
    """The run's directory: the checkpoint directory's parent, else the logger's or the trainer's root."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and getattr(checkpoint, "dirpath", None):
        return Path(checkpoint.dirpath).parent
    return Path(trainer.log_dir or trainer.default_root_dir)


def wandb_logger(trainer: pl.Trainer) -> WandbLogger | None:
    """The trainer's W&B logger (rank 0 only; None on other ranks and without one)."""
    logger = trainer.logger
    return logger if trainer.is_global_zero and isinstance(logger, WandbLogger) else None


def wandb_online(logger: WandbLogger) -> bool:
    """Whether the W&B run uploads as it goes (not offline / disabled)."""
    return not getattr(logger, "_offline", False)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as indented JSON at ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def append_jsonl(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as one JSON line appended to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(json.dumps(data, sort_keys=True) + "\n")
    return path


def write_png(path: Path, image: np.ndarray) -> Path:
    """uint8 [h, w, 3] ``image`` as a PNG at ``path`` (parents created)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
