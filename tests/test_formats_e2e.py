"""End to end: ``xclip-pl test`` with a tiny CLIP on a tiny synthetic tree of every dataset format."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import yaml

from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic_formats import FORMATS, write_synthetic

DATAMODULES = {
    "msrvtt": "datamodules.msrvtt.MSRVTTDataModule", "msvd": "datamodules.msvd.MSVDDataModule",
    "lsmdc": "datamodules.lsmdc.LSMDCDataModule", "didemo": "datamodules.didemo.DiDeMoDataModule",
    "activitynet": "datamodules.activitynet.ActivityNetDataModule", "folder": "datamodules.folder.FolderDataModule",
}
METRICS = {f"test/{d}/{m}" for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")}


def tiny_config(tmp: Path, format: str, root: Path) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(tmp / "runs")},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}}},
        "data": {"class_path": DATAMODULES[format],
                 "init_args": {"root": str(root), "max_words": 16, "max_frames": 3, "image_size": 32,
                               "batch_size": 2, "eval_batch_size": 4, "num_workers": 0,
                               "tokenizer_dir": str(tmp / "tokenizers")}},
    }
    path = tmp / f"{format}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_format_is_covered():
    assert set(DATAMODULES) == set(FORMATS)


@pytest.mark.parametrize("format", FORMATS)
def test_cli_test_on_synthetic_format(tmp_path, monkeypatch, format):
    monkeypatch.setattr(sys, "argv", ["xclip-pl"])  # pytest's own arguments are not the CLI's
    root = write_synthetic(tmp_path / format, format, num_train=4, num_val=2, num_test=3, captions_per_video=2,
                           seconds=2.0, width=32, height=32)
    cli = build_cli(["test", "--config", str(tiny_config(tmp_path, format, root))])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    assert METRICS <= metrics.keys(), sorted(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert 1 <= metrics["test/t2v/MdR"] <= 3 and 0 <= metrics["test/t2v/R@1"] <= 100
    records = cli.datamodule.records["test"]
    assert len(records) == 3 and all(r.captions for r in records)
    if format in ("msvd", "folder"):  # multi-caption evaluation: every caption a query
        assert [len(r.captions) for r in records] == [2, 2, 2]
