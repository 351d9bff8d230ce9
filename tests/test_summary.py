"""RunSummary: the data summary per split (bad files included) and the summary screen."""
from __future__ import annotations

from pathlib import Path

from xclip_pl.callbacks.summary import data_summary, render_summary
from xclip_pl.data.bad_videos import BadVideoLog
from xclip_pl.data.records import VideoRecord


class FakeData:
    def __init__(self, tmp: Path) -> None:
        def record(i: int, captions: int) -> VideoRecord:
            return VideoRecord(video_id=f"v{i}", path=tmp / f"v{i}.mp4", captions=[f"c{k}" for k in range(captions)])

        self.records = {"train": [record(0, 3), record(1, 2)], "test": [record(2, 1), record(3, 1), record(4, 1)]}
        self.bad_video_log = BadVideoLog(tmp / "bad_videos")
        self.bad_video_log.reset()
        self.bad_video_log.record(tmp / "v3.mp4", "v3", "moov atom not found")


def test_data_summary_counts_videos_captions_and_bad_files_per_split(tmp_path):
    assert data_summary(FakeData(tmp_path)) == [
        {"split": "train", "videos": 2, "captions": 5, "bad_files": 0},
        {"split": "test", "videos": 3, "captions": 3, "bad_files": 1}]
    assert data_summary(None) == []


def test_summary_screen():
    facts = {"command": "fit", "checkpoint": "runs/x/checkpoints/best-epoch3-step40.ckpt", "monitor": "val/t2v/R@1",
             "monitor_value": 46.0, "run_directory": "runs/x", "wall_seconds": 454.2, "epochs": 20, "steps": 320,
             "train_clips": 20000, "train_clips_per_s": 48.25, "test_clips_per_s": 310.0, "peak_gpu_gib": None,
             "bad_files": 1}
    metrics = {f"test/{d}/{k}": v for d in ("t2v", "v2t") for k, v in
               (("R@1", 46.0), ("R@5", 88.0), ("R@10", 97.2), ("MdR", 2.0), ("MnR", 3.0))}
    data = [{"split": "train", "videos": 1000, "captions": 20000, "bad_files": 1}]
    text = render_summary("fit", facts, metrics, data)
    lines = text.splitlines()
    assert "xclip-pl fit: summary" in lines[0] and set(lines[-1]) == {"="} and len(lines[0]) == len(lines[-1])
    assert all(len(line) <= len(lines[-1]) for line in lines)
    assert "best checkpoint  runs/x/checkpoints/best-epoch3-step40.ckpt (val/t2v/R@1 = 46.00)" in lines
    assert "wall time        0:07:34 (454.2 s)" in lines
    assert "training         20 epochs, 320 steps, 20000 clips, 48.2 clips/s" in lines
    assert "bad video files  1" in lines and "      | train | 1000 | 20000 | 1 |" in lines
    assert "| t2v | 46.0 | 88.0 | 97.2 | 2.0 | 3.0 |" in lines and "peak GPU memory" not in text
    assert "peak GPU memory  3.50 GiB" in render_summary("fit", {**facts, "peak_gpu_gib": 3.5}, metrics, data)
