"""``xclip-pl cache`` (xclip_pl.tools.cache): fills the frame cache a training run then reads, and only that."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_media import write_video

from xclip_pl.cli import main
from xclip_pl.data import video
from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.synthetic_formats import write_synthetic
from xclip_pl.data.video import decode_clip
from xclip_pl.tools.cache import fill, unique_videos

DATA = {"max_words": 16, "max_frames": 3, "image_size": 32, "batch_size": 2, "eval_batch_size": 4, "num_workers": 0}


def write_config(tmp: Path, root: Path, **data) -> Path:
    config = {"seed_everything": 0, "trainer": {"accelerator": "cpu", "logger": False, "default_root_dir": str(tmp / "runs")},
              "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP", "init_args": {"clip": "tiny"}}},
              "data": {"class_path": "datamodules.msrvtt.MSRVTTDataModule",
                       "init_args": {"root": str(root), "tokenizer_dir": str(tmp / "tokenizers"), **DATA, **data}}}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def counts(text: str) -> tuple[int, int, int]:
    """``(cached now, already there, undecodable)`` from the command's summary line."""
    found = re.search(r"(\d+) cached now, (\d+) already there, (\d+) undecodable", text)
    assert found, text
    return tuple(int(n) for n in found.groups())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("msrvtt")
    return write_synthetic(root, "msrvtt", num_train=4, num_test=3, captions_per_video=2, seconds=2.0,
                           width=32, height=32)


def test_cache_fills_every_split_and_training_then_reads_only_the_cache(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["xclip-pl"])
    cache_dir = tmp_path / "frames"
    config = write_config(tmp_path, dataset, frame_cache=False, frame_cache_dir=str(cache_dir))  # forced on
    main(["cache", "--config", str(config), "--num_workers", "2"])
    out = capsys.readouterr().out
    assert counts(out) == (7, 0, 0)  # 4 train + 3 test videos (MSR-VTT: val = test, cached once)
    assert "frame_cache: false" in out  # says how to train from it
    assert len(list(cache_dir.glob("*.mask.npy"))) == 7 and not list(cache_dir.glob(".*.tmp"))
    assert re.search(r"\d+\.\d clips/s", out) and re.search(r"\(\d+ bytes\)", out)

    main(["cache", "--config", str(config), "--num_workers", "0"])
    assert counts(capsys.readouterr().out) == (0, 7, 0)  # a second fill skips every entry

    from datamodules.msrvtt import MSRVTTDataModule

    dm = MSRVTTDataModule(root=str(dataset), tokenizer_dir=str(tmp_path / "tokenizers"), frame_cache=True,
                          frame_cache_dir=str(cache_dir), **DATA)
    dm.setup("fit")
    expected = {str(r.path): decode_clip(r.path, 3, 32) for split in ("train", "val") for r in dm.records[split]}

    def no_decoding(*args, **kwargs):
        raise AssertionError(f"decoded {args[0]} instead of reading the frame cache")

    monkeypatch.setattr(video, "decode_clip", no_decoding)
    seen = 0
    for batch in dm.train_dataloader():  # one training epoch
        for frames, mask, index in zip(batch["frames"], batch["frame_mask"], batch["video_index"]):
            want = expected[str(dm.records["train"][int(index)].path)]
            assert np.array_equal(frames.numpy(), want[0]) and np.array_equal(mask.numpy(), want[1])
            seen += 1
    assert seen == 8  # 4 videos x 2 captions, batches of 2
    for batch in dm.val_dataloader()[0]:
        for frames, index, ok in zip(batch["frames"], batch["video_index"], batch["video_ok"]):
            assert ok and np.array_equal(frames.numpy(), expected[str(dm.records["val"][int(index)].path)][0])


def test_changed_sampling_arguments_miss_the_cache(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["xclip-pl"])
    config = write_config(tmp_path, dataset, frame_cache=True, frame_cache_dir=str(tmp_path / "frames"))
    main(["cache", "--config", str(config), "--splits", "train"])
    assert counts(capsys.readouterr().out) == (4, 0, 0)
    main(["cache", "--config", str(config), "--splits", "train", "--data.init_args.max_frames", "4"])  # flags pass
    assert counts(capsys.readouterr().out) == (4, 0, 0)
    main(["cache", "--config", str(config), "--splits", "train", "--data.init_args.fps", "2.0"])
    assert counts(capsys.readouterr().out) == (4, 0, 0)
    main(["cache", "--config", str(config), "--splits", "train", "--data.init_args.max_frames", "4"])
    assert counts(capsys.readouterr().out) == (0, 4, 0)


def test_jpeg_cache_format_is_filled_recognised_and_read_by_training(dataset, tmp_path, monkeypatch, capsys):
    """``data.init_args.frame_cache_format: jpeg``: the tool writes .jpg entries, a second fill finds them whole,
    and the datamodule trains from them without decoding; the npy entries of the same clips are other keys."""
    monkeypatch.setattr(sys, "argv", ["xclip-pl"])
    cache_dir = tmp_path / "frames"
    config = write_config(tmp_path, dataset, frame_cache=True, frame_cache_dir=str(cache_dir), frame_cache_format="jpeg")
    main(["cache", "--config", str(config), "--splits", "train"])
    assert counts(capsys.readouterr().out) == (4, 0, 0)
    assert len(list(cache_dir.glob("*.frames.jpg"))) == 4 and not list(cache_dir.glob("*.frames.npy"))
    main(["cache", "--config", str(config), "--splits", "train"])
    assert counts(capsys.readouterr().out) == (0, 4, 0)
    main(["cache", "--config", str(config), "--splits", "train", "--data.init_args.frame_cache_format", "npy"])
    assert counts(capsys.readouterr().out) == (4, 0, 0)  # the lossless entries are separate keys

    from datamodules.msrvtt import MSRVTTDataModule

    dm = MSRVTTDataModule(root=str(dataset), tokenizer_dir=str(tmp_path / "tokenizers"), frame_cache=True,
                          frame_cache_dir=str(cache_dir), frame_cache_format="jpeg", **DATA)
    dm.setup("fit")
    decoded = {str(r.path): decode_clip(r.path, 3, 32)[0] for r in dm.records["train"]}
    monkeypatch.setattr(video, "decode_clip", lambda *a, **k: pytest.fail(f"decoded {a[0]} instead of reading the cache"))
    for batch in dm.train_dataloader():
        for frames, index in zip(batch["frames"], batch["video_index"]):
            want = decoded[str(dm.records["train"][int(index)].path)].astype(int)
            error = np.abs(frames.numpy().astype(int) - want)
            assert error.mean() < 3 and error.max() < 64  # JPEG q95 4:4:4 of 32 px frames: close, not exact


@pytest.fixture
def clips(tmp_path) -> list[VideoRecord]:
    return [VideoRecord(f"v{i}", write_video(tmp_path / f"v{i}.mp4", num_frames=16, rate=8, seed=i), ["x"])
            for i in range(3)]


def test_a_changed_file_size_or_mtime_misses_the_cache(clips, tmp_path):
    loader = ClipLoader(3, 32, cache_dir=tmp_path / "frames")
    assert (fill(loader, clips).cached, fill(loader, clips).already) == (3, 3)
    os.utime(clips[0].path, ns=(os.stat(clips[0].path).st_atime_ns, os.stat(clips[0].path).st_mtime_ns + 10**9))
    stat = os.stat(clips[1].path)
    with open(clips[1].path, "ab") as handle:  # a larger file with the same mtime
        handle.write(b"\0" * 16)
    os.utime(clips[1].path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = fill(loader, clips)
    assert report.already == 1 and report.cached + len(report.undecodable) == 2


def test_two_workers_writing_the_same_keys_leave_whole_entries(clips, tmp_path):
    cache_dir = tmp_path / "frames"
    twice = [record for record in clips for _ in range(2)]  # items 2k and 2k+1 go to workers 0 and 1 together
    report = fill(ClipLoader(4, 32, cache_dir=cache_dir), twice, num_workers=2)
    assert report.videos == 6 and not report.undecodable and report.cached >= 3
    assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    assert len(list(cache_dir.glob("*.npy"))) == 6
    reader = ClipLoader(4, 32, cache_dir=cache_dir)
    for record in clips:
        frames, mask = reader._read_cache(reader.cache_key(record))
        want = decode_clip(record.path, 4, 32)
        assert np.array_equal(frames, want[0]) and np.array_equal(mask, want[1])


def test_undecodable_videos_are_counted_not_fatal(clips, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    loader = ClipLoader(3, 32, cache_dir=tmp_path / "frames", strict=True)
    report = fill(loader, [*clips, VideoRecord("bad", bad, ["x"])], log_every=1, progress=False)
    assert (report.cached, report.already) == (3, 0) and [p for p, _ in report.undecodable] == [str(bad)]
    assert report.bytes_on_disk == sum(p.stat().st_size for p in (tmp_path / "frames").iterdir())
    assert "1 undecodable" in report.summary() and str(bad) in report.summary()


def test_unique_videos_keeps_one_record_per_file_and_window(clips):
    a, b = clips[:2]
    windowed = VideoRecord("a2", a.path, ["y"], start=1.0, end=2.0)
    assert unique_videos([a, b, VideoRecord("a-again", a.path, ["z"]), windowed]) == [a, b, windowed]


def test_help_says_the_cache_is_forced_on(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "--help"])
    assert exit_info.value.code == 0
    assert "frame_cache: false" in capsys.readouterr().out
