"""``BadVideoReport``: the list of every video that could not be decoded, at the end of each command."""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn


class BadVideoReport(Callback):
    """At the end of ``fit`` / ``validate`` / ``test`` / ``predict``, rank 0 merges the datamodule's per-rank
    logs of undecodable videos (``<default_root_dir>/bad_videos/``) into one file and warns with the list.

    Args:
        filename: the report's name beside the ``bad_videos/`` folder (``<default_root_dir>/bad_videos.tsv``).
    """

    def __init__(self, filename: str = "bad_videos.tsv") -> None:
        self.filename = filename

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        log = getattr(trainer.datamodule, "bad_video_log", None)
        if log is None or not trainer.is_global_zero:
            return
        report = log.write_report(log.directory.parent / self.filename)
        if report:
            rank_zero_warn(report)
