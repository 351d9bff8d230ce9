"""`make run`'s config, made small: the offline W&B run and the run directory hold every dashboard view.

wandb 0.31 offline writes ``<save_dir>/wandb/offline-run-*/run-<id>.wandb`` (the binary history) and the
media under ``files/media/images/<key>_<step>_<hash>.png``; no ``wandb-summary.json`` until synced. So the
test reads the media files, looks for the scalar keys in the binary log, and reads the run directory's files.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xclip_pl.callbacks.term_diagnostics import TERMS
from xclip_pl.cli import build_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """``xclip-pl fit --config conf/synthetic.yaml`` with 1 epoch, 16 + 8 clips, the tiny CLIP, offline W&B."""
    tmp = tmp_path_factory.mktemp("run")
    args = ["fit", "--config", str(REPO / "conf" / "synthetic.yaml"), "--trainer.max_epochs", "1",
            "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp / "runs"),
            "--trainer.logger.init_args.save_dir", str(tmp / "runs"), "--trainer.logger.init_args.offline", "true",
            "--model.model.init_args.clip", "tiny", "--data.init_args.root", str(tmp / "data"),
            "--data.init_args.num_train", "16", "--data.init_args.num_test", "8", "--data.init_args.image_size", "32",
            "--data.init_args.batch_size", "8", "--data.init_args.eval_batch_size", "8",
            "--data.init_args.num_workers", "0"]
    with pytest.MonkeyPatch.context() as env:  # undone after the run (not leaked into later tests)
        env.setenv("WANDB_MODE", "offline")
        cli = build_cli(args)
    return tmp, cli


def test_offline_wandb_run_holds_heatmap_rank_histogram_and_diagnostics(fitted):
    tmp, _ = fitted
    (run,) = sorted((tmp / "runs" / "wandb").glob("offline-run-*"))
    media = run / "files" / "media" / "images"
    for stage in ("val", "test"):
        heatmaps = sorted((media / stage).glob("similarity_block_*.png"))
        histograms = sorted((media / stage).glob("rank_histogram_*.png"))
        assert heatmaps and histograms, sorted(p.name for p in (media / stage).iterdir())
        block = np.asarray(Image.open(heatmaps[-1]))
        assert block.shape[:2] == (8 * 8, 8 * 8)  # the 8 test videos x one caption each, 8-pixel cells
        assert np.asarray(Image.open(histograms[-1])).std() > 0
    history = next(run.glob("run-*.wandb")).read_bytes()
    for key in [f"test/diagnostics/share/{t}" for t in TERMS] + [
            "test/diagnostics/entropy/words", "test/diagnostics/entropy/frames", "test/logit_scale",
            "train/clips_per_s", "train/epoch_clips_per_s", "test/clips_per_s", "data/summary"]:
        assert key.encode() in history, key


def test_run_directory_holds_the_same_views_as_files(fitted):
    _, cli = fitted
    run_dir = Path(cli.trainer.checkpoint_callback.dirpath).parent
    out = run_dir / "diagnostics" / "test"
    assert np.load(out / "similarity_block.npy").shape == (8, 8)
    rows = list(csv.reader((out / "rank_histogram.csv").open()))
    assert rows[0] == ["rank", "t2v", "v2t"] and sum(int(r[1]) for r in rows[1:]) == 8
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert sum(diagnostics[f"diagnostics/share/{t}"] for t in TERMS) == pytest.approx(1.0)
    assert diagnostics["logit_scale"] > 0
    data = list(csv.DictReader((run_dir / "data_summary.csv").open()))
    assert [(r["split"], r["videos"], r["bad_files"]) for r in data] == [("train", "16", "0"), ("val", "8", "0"),
                                                                          ("test", "8", "0")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["command"] == "fit" and summary["checkpoint"] == cli.trainer.checkpoint_callback.best_model_path
    assert summary["train_clips_per_s"] > 0 and summary["bad_files"] == 0


def test_fit_ends_with_one_summary_screen(fitted):
    _, cli = fitted
    run_dir = Path(cli.trainer.checkpoint_callback.dirpath).parent
    text = (run_dir / "summary.txt").read_text()
    assert text.startswith("=") and " xclip-pl fit: summary " in text.splitlines()[0]
    for needle in ("best checkpoint", cli.trainer.checkpoint_callback.best_model_path, "wall time", "clips/s",
                   "bad video files  0", "test retrieval", "| t2v |", "| train | 16 |"):
        assert needle in text, needle
