"""Test-time re-scoring options run beside the raw metrics and are logged under their own names."""
from __future__ import annotations

import math

import pytorch_lightning as pl

from datamodules.synthetic import SyntheticDataModule
from xclip_pl.module import XCLIPRetrieval


def test_dsl_qbnorm_sinkhorn_are_logged_separately(tmp_path):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.prepare_data()
    module = XCLIPRetrieval(clip="tiny", max_words=16, max_frames=3, temporal_layers=1,
                            test_time=["dsl", "qb_norm", "sinkhorn"], qb_norm_bank_size=20, eval_dtype="bf16")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for option in ("dsl", "qb_norm", "sinkhorn"):
        for key in ("t2v/R@1", "t2v/MnR", "v2t/R@1"):
            assert math.isfinite(metrics[f"test/{option}/{key}"]), (option, key)
    assert "test/t2v/R@1" in metrics  # the raw numbers are still there, under their own names
    assert metrics["test/qb_norm/v2t/R@1"] == metrics["test/v2t/R@1"]  # QB-Norm re-scores text-to-video only
