"""``TokenizerCopy``: the run's tokenizer beside its checkpoints, so a checkpoint can be used elsewhere."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class TokenizerCopy(Callback):
    """The run's tokenizer beside its checkpoints.

    At the start of ``fit``, rank 0 writes the datamodule's tokenizer (``vocab.json`` + ``merges.txt``) to
    ``<checkpoint dir>/../tokenizer`` (W&B runs: ``runs/<name>/<project>/<run id>/tokenizer``), which
    ``data.init_args.tokenizer`` loads back. Nothing happens without a checkpoint directory or when the
    datamodule has no tokenizer."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule, checkpoint = trainer.datamodule, trainer.checkpoint_callback
        if (trainer.is_global_zero and getattr(datamodule, "tokenizer", None) is not None
                and checkpoint is not None and checkpoint.dirpath):
            datamodule.save_tokenizer(Path(checkpoint.dirpath).parent / "tokenizer")
