"""XCLIPRetrieval: construction, hyper-parameters, optimisation. (Which stage runs the test-time re-scorings: tests/test_rescoring_callback.py.)"""
from __future__ import annotations

import pytest
import torch


# ------------------------------------------------------------------------------- construction, hparams
def test_hyper_parameters_are_plain_data_that_rebuild_the_module(tmp_path):
    """Built in Python (not by LightningCLI), the module records the network and the optimizer / scheduler as
    ``class_path`` / ``init_args`` with Lightning's instantiator: the checkpoint loads with
    ``weights_only=True`` and ``load_from_checkpoint`` rebuilds the same module."""
    from functools import partial

    import pytorch_lightning as pl
    from helpers_model import make_module

    from xclip_pl.module import XCLIPRetrieval
    from xclip_pl.train.bertadam import BertAdam
    from xclip_pl.train.schedules import ReferenceWarmupCosine

    torch.manual_seed(0)
    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, freeze_layers=0, lr=1e-3,
                         optimizer=partial(BertAdam, max_grad_norm=1.0), no_decay="bias",
                         scheduler=partial(ReferenceWarmupCosine, warmup_ratio=0.2))
    hparams = dict(module.hparams)
    assert hparams["model"]["class_path"] == "xclip_pl.model.xclip.XCLIP"
    assert hparams["model"]["init_args"]["temporal_layers"] == 1 and hparams["model"]["init_args"]["freeze_layers"] == 0
    assert hparams["optimizer"] == {"class_path": "xclip_pl.train.bertadam.BertAdam", "init_args": {"max_grad_norm": 1.0}}
    assert hparams["scheduler"] == {"class_path": "xclip_pl.train.schedules.ReferenceWarmupCosine",
                                    "init_args": {"warmup_ratio": 0.2}}
    assert hparams["_instantiator"] == "pytorch_lightning.cli.instantiate_module" and hparams["lr"] == 1e-3
    path = tmp_path / "module.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": pl.__version__}, path)
    assert torch.load(path, weights_only=True)["hyper_parameters"] == hparams
    loaded = XCLIPRetrieval.load_from_checkpoint(path, map_location="cpu")
    assert type(loaded.model).__name__ == "XCLIP"
    assert {k: v for k, v in loaded.hparams.items() if k != "optimizer"} == {k: v for k, v in hparams.items() if k != "optimizer"}
    restored = loaded.hparams["optimizer"]  # jsonargparse adds BertAdam's defaults (betas, eps) to what was given
    assert restored["class_path"] == hparams["optimizer"]["class_path"]
    assert restored["init_args"] == {"betas": (0.9, 0.98), "eps": 1e-6, "max_grad_norm": 1.0}
    for key, value in module.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert loaded.model.init_args == module.model.init_args


def test_clip_dtype_fp16_needs_32_true_precision():
    from helpers_model import make_module

    module = make_module(clip="tiny", max_words=8, max_frames=3, temporal_layers=1, clip_dtype="fp16")
    module.trainer = type("FakeTrainer", (), {"precision": "bf16-mixed"})()  # on_fit_start reads only this
    with pytest.raises(ValueError, match=r"model.model.init_args.clip_dtype=fp16.*trainer.precision: 32-true"):
        module.on_fit_start()
