"""Undecodable videos never produce NaN nor kill a run; they are listed at the end, or stop it when strict."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic import ensure_synthetic_msrvtt
from xclip_pl.data.video import VideoDecodeError


@pytest.fixture()
def broken_tree(tmp_path) -> tuple[Path, list[Path]]:
    root = ensure_synthetic_msrvtt(tmp_path / "data", num_train=12, num_test=6, seed=1, progress=False)
    videos = root / "videos" / "all"
    zero, truncated, text = videos / "video2.mp4", videos / "video5.mp4", videos / "video14.mp4"
    zero.write_bytes(b"")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    text.write_text("this is not a video\n")
    return root, [zero, truncated, text]


def config(tmp_path: Path, root: Path, strict: bool) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "num_sanity_val_steps": 0, "log_every_n_steps": 1,
                    "default_root_dir": str(tmp_path / "run"),
                    "callbacks": [{"class_path": "xclip_pl.callbacks.bad_videos.BadVideoReport"}]},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny", "temporal_layers": 1}}},
        "data": {"class_path": "datamodules.msrvtt.MSRVTTDataModule",
                 "init_args": {"root": str(root), "max_words": 16, "max_frames": 3, "image_size": 32, "batch_size": 4,
                               "eval_batch_size": 4, "num_workers": 0, "strict": strict}},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bad_files_are_skipped_scored_as_misses_and_listed(tmp_path, broken_tree):
    root, bad = broken_tree
    cli = build_cli(["fit", "--config", str(config(tmp_path, root, strict=False)), "--test_after_fit", "false"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert math.isfinite(metrics["train/loss"])
    assert all(math.isfinite(metrics[k]) for k in metrics if k.startswith("val/"))
    assert metrics["val/num_undecodable_videos"] == 1.0  # MSR-VTT validates on the test split
    assert metrics["val/t2v/R@1"] <= 100.0 * 5 / 6  # the bad test video's caption is a miss
    listed = (tmp_path / "run" / "bad_videos.tsv").read_text()
    for path in bad:
        assert str(path) in listed


def test_strict_stops_at_the_first_bad_file_naming_it(tmp_path, broken_tree):
    root, bad = broken_tree
    with pytest.raises(VideoDecodeError) as error:
        build_cli(["fit", "--config", str(config(tmp_path, root, strict=True))])
    assert any(str(path) in str(error.value) for path in bad)
    assert "strict" in str(error.value)
