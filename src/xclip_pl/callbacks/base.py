"""``RetrievalCallback``: the base of callbacks that observe an evaluation's scored result.

A callback's ``on_validation_epoch_end`` / ``on_test_epoch_end`` runs before the LightningModule's, which is
where the similarity is computed; so :class:`~xclip_pl.module.XCLIPRetrieval` calls
:meth:`RetrievalCallback.on_retrieval_end` on every callback that defines it, at the end of its own epoch-end
hook, with the :class:`~xclip_pl.evaluate.result.RetrievalResult`. Nothing is called during the sanity check.
"""
from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from xclip_pl.evaluate.result import RetrievalResult


class RetrievalCallback(Callback):
    """A callback that sees every validation and test result (on every rank; ``trainer.is_global_zero`` tells
    rank 0). ``pl_module.log`` / ``log_dict`` may be called from :meth:`on_retrieval_end`."""

    def on_retrieval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, result: RetrievalResult) -> None:
        """Called once per evaluation epoch, after the raw metrics of ``result.stage`` were logged."""
