"""End to end through the `xclip-pl` CLI on a tiny synthetic MSR-VTT tree with a tiny CLIP."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic import ensure_synthetic_msrvtt

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp: Path, data_root: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "log_every_n_steps": 1,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp / "runs"),
                    "logger": {"class_path": "xclip_pl.loggers.XCLIPWandbLogger",
                               "init_args": {"save_dir": str(tmp / "runs"), "offline": True}}},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}}, "lr": 1e-3},
        "data": {"class_path": "datamodules.synthetic.SyntheticDataModule",
                 "init_args": {"root": str(data_root), "num_train": 12, "num_test": 6, "max_words": 16, "max_frames": 3,
                               "image_size": 32, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}},
    }
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    ensure_synthetic_msrvtt(root, num_train=12, num_test=6, seed=0, progress=False)
    return root


def test_fit_then_test_reproduces_metrics_and_writes_wandb_run(tmp_path, data_root, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    config = tiny_config(tmp_path, data_root)
    fit = build_cli(["fit", "--config", str(config)])
    best = fit.trainer.checkpoint_callback.best_model_path
    assert best and Path(best).is_file() and Path(best).parent.name == "checkpoints"
    assert (Path(best).parent / "last.ckpt").is_file()
    fitted = {k: float(v) for k, v in fit.trainer.callback_metrics.items() if k.startswith("test/")}
    assert {"test/t2v/R@1", "test/t2v/R@5", "test/t2v/R@10", "test/t2v/MdR", "test/t2v/MnR", "test/v2t/R@1"} <= fitted.keys()

    tested = build_cli(["test", "--config", str(config), "--ckpt_path", best])
    again = {k: float(v) for k, v in tested.trainer.callback_metrics.items() if k.startswith("test/")}
    assert again == fitted

    runs = sorted((tmp_path / "runs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, "expected one W&B offline run for fit (+ its test) and one for test"
    config_text = (runs[0] / "files" / "config.yaml").read_text()
    assert "cli" in config_text and "SyntheticDataModule" in config_text and "clip: tiny" in config_text
    # offline runs keep their history in the binary run-*.wandb log (protobuf records, keys as strings)
    history = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in ("train/loss", "train/logit_scale", "val/t2v/R@1", "test/t2v/R@1", "test/v2t/MnR"):
        assert key.encode() in history, key


def test_print_config_of_the_paper_recipe_is_complete():
    out = subprocess.run([sys.executable, "-m", "xclip_pl.cli", "fit", "--config", str(REPO / "conf" / "msrvtt_vit_b32.yaml"),
                          "--print_config"], capture_output=True, text=True, cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    assert config["model"]["model"]["class_path"] == "xclip_pl.model.xclip.XCLIP"
    assert config["model"]["model"]["init_args"]["clip"] == "openai/clip-vit-base-patch32"
    assert config["model"]["optimizer"]["class_path"] == "xclip_pl.train.bertadam.BertAdam"
    assert config["model"]["scheduler"]["class_path"] == "xclip_pl.train.schedules.ReferenceWarmupCosine"
    assert config["data"]["class_path"] == "datamodules.msrvtt.MSRVTTDataModule"
    assert config["data"]["init_args"]["max_words"] == 32 and config["data"]["init_args"]["max_frames"] == 12
    assert {"trainer", "model", "data", "checkpoint", "seed_everything"} <= config.keys()


def _help(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "xclip_pl.cli", "fit", *args], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_explains_every_argument():
    import inspect

    from xclip_pl.model.xclip import XCLIP
    from xclip_pl.module import XCLIPRetrieval

    module_help = _help("--help")
    for name in inspect.signature(XCLIPRetrieval.__init__).parameters:
        if name != "self":
            assert f"--model.{name} " in module_help, name
    assert "--checkpoint.ties " in module_help and "later" in module_help
    network_help = _help("--model.model.help", "xclip_pl.model.xclip.XCLIP")  # the class-typed network's arguments
    for name in inspect.signature(XCLIP.__init__).parameters:
        if name != "self":
            assert f"--model.model.{name} " in network_help, name
    assert "AOSM softmax temperature" in XCLIP.__doc__ and "AOSM softmax temperature" in network_help
    # optimizer and scheduler classes: their own arguments; lr / weight decay come from the groups, total_steps from the run
    optimizer_help = _help("--model.optimizer.help", "xclip_pl.train.bertadam.BertAdam")
    for name in ("betas", "eps", "max_grad_norm"):
        assert f"--model.optimizer.{name} " in optimizer_help, name
    assert "--model.optimizer.lr " not in optimizer_help and "--model.optimizer.weight_decay " not in optimizer_help
    for scheduler in ("xclip_pl.train.schedules.WarmupCosine", "xclip_pl.train.schedules.ReferenceWarmupCosine"):
        assert "--model.scheduler.warmup_ratio " in _help("--model.scheduler.help", scheduler), scheduler
    data_help = _help("--data.help", "datamodules.msrvtt.MSRVTTDataModule")
    for name in ("root", "max_words", "max_frames", "fps", "frame_sampling", "batch_size", "train_csv", "video_dir"):
        assert f"--data.{name} " in data_help, name


def test_max_words_and_max_frames_are_linked_into_the_network(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "unused")  # nothing is read: the classes are only built
    text = yaml.safe_load(config.read_text())
    text["trainer"]["logger"] = False
    config.write_text(yaml.safe_dump(text))
    cli = build_cli(["--config", str(config), "--data.init_args.max_words", "12", "--data.init_args.max_frames", "5"], run=False)
    assert cli.model.model.max_words == 12 and cli.model.model.max_frames == 5
    assert cli.model.hparams["model"]["init_args"]["max_words"] == 12


def test_checkpoint_ties_is_set_from_the_config(tmp_path):
    config = tiny_config(tmp_path, tmp_path / "unused")  # nothing is read: the classes are only built
    text = yaml.safe_load(config.read_text())
    text["trainer"]["logger"] = False
    for ties in ("earlier", "later"):
        text["checkpoint"] = {"ties": ties}
        config.write_text(yaml.safe_dump(text))
        cli = build_cli(["--config", str(config)], run=False)
        assert cli.trainer.checkpoint_callback.ties == ties
        assert cli.trainer.checkpoint_callback.monitor == "val/t2v/R@1"
