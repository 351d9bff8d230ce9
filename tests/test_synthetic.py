"""The synthetic MSR-VTT generator: on-disk format, decodability, determinism, generate-once."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xclip_pl.data.synthetic import (
    COLOUR_WORDS,
    MOTION_PARTICIPLES,
    MOTION_VERBS,
    SHAPE_WORDS,
    ensure_synthetic_msrvtt,
    write_synthetic_msrvtt,
)
from xclip_pl.data.video import decode_clip

TINY = dict(num_train=6, num_test=4, captions_per_video=3, seconds=3.0, progress=False)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_msrvtt(tmp_path_factory.mktemp("synthetic") / "msrvtt", seed=1, **TINY)


def test_msrvtt_files_parse(tiny_root: Path) -> None:
    data = json.loads((tiny_root / "MSRVTT_data.json").read_text())
    videos = pd.DataFrame(data["videos"])
    sentences = pd.DataFrame(data["sentences"])
    assert videos["video_id"].tolist() == [f"video{i}" for i in range(10)]
    assert videos["split"].tolist() == ["train"] * 6 + ["test"] * 4
    assert len(sentences) == 30 and sentences["sen_id"].tolist() == list(range(30))
    assert (sentences.groupby("video_id").size() == 3).all()
    train = pd.read_csv(tiny_root / "MSRVTT_train.9k.csv")
    assert train.columns.tolist() == ["video_id"] and train["video_id"].tolist() == [f"video{i}" for i in range(6)]
    test = pd.read_csv(tiny_root / "MSRVTT_JSFUSION_test.csv")
    assert test.columns.tolist() == ["key", "vid_key", "video_id", "sentence"]
    assert test["video_id"].tolist() == [f"video{i}" for i in range(6, 10)]
    captions_of = sentences.groupby("video_id")["caption"].apply(list)
    assert all(row.sentence in captions_of[row.video_id] for row in test.itertuples())
    assert (tiny_root / ".complete").exists()


def test_captions_name_colour_shape_and_motion_of_both_objects(tiny_root: Path) -> None:
    data = json.loads((tiny_root / "MSRVTT_data.json").read_text())
    objects = {v["video_id"]: v["objects"] for v in data["videos"]}
    for sentence in data["sentences"]:
        caption = sentence["caption"]
        assert caption == caption.lower() and "  " not in caption
        for obj in objects[sentence["video_id"]]:
            assert any(word in caption for word in COLOUR_WORDS[obj["colour"]])
            assert any(word in caption for word in SHAPE_WORDS[obj["shape"]])
            motions = MOTION_VERBS[obj["motion"]] + MOTION_PARTICIPLES[obj["motion"]]
            assert any(phrase in caption for phrase in motions)
    first_video = [s["caption"] for s in data["sentences"] if s["video_id"] == "video0"]
    assert len(set(first_video)) == len(first_video)


def test_videos_decode(tiny_root: Path) -> None:
    videos = json.loads((tiny_root / "MSRVTT_data.json").read_text())["videos"]
    for record in videos:
        frames, frame_mask = decode_clip(tiny_root / "videos" / "all" / f"{record['video_id']}.mp4", 4, 32)
        assert frame_mask.tolist() == [True, True, True, False]  # 3 s -> candidates at 0, 1, 2 s
        assert frames[:3].max() > 150  # bright objects on a dark background
        moving = any(obj["motion"] != "still" for obj in record["objects"])
        change = np.abs(frames[0].astype(int) - frames[2].astype(int)).max()
        assert change > 60 if moving else change < 40


def test_deterministic_by_seed(tmp_path: Path, tiny_root: Path) -> None:
    again = write_synthetic_msrvtt(tmp_path / "again", seed=1, **TINY)
    other = write_synthetic_msrvtt(tmp_path / "other", seed=2, **TINY)

    def sentences(root: Path) -> list:
        return json.loads((root / "MSRVTT_data.json").read_text())["sentences"]

    assert sentences(again) == sentences(tiny_root)
    assert sentences(other) != sentences(tiny_root)
    for index in (0, 9):
        name = Path("videos") / "all" / f"video{index}.mp4"
        first, _ = decode_clip(tiny_root / name, 4, 32)
        second, _ = decode_clip(again / name, 4, 32)
        np.testing.assert_array_equal(first, second)


def test_ensure_generates_once(tmp_path: Path) -> None:
    root = tmp_path / "data"
    kwargs = dict(num_train=2, num_test=1, captions_per_video=2, seconds=2.0, progress=False)
    ensure_synthetic_msrvtt(root, **kwargs)
    marker = root / ".complete"
    stamp = marker.stat().st_mtime_ns
    video = root / "videos" / "all" / "video0.mp4"
    video_stamp = video.stat().st_mtime_ns
    assert ensure_synthetic_msrvtt(root, **kwargs) == root
    assert marker.stat().st_mtime_ns == stamp and video.stat().st_mtime_ns == video_stamp
    assert json.loads(marker.read_text())["num_train"] == 2

    ensure_synthetic_msrvtt(root, **{**kwargs, "num_train": 3})  # other arguments: rewritten
    assert len(pd.read_csv(root / "MSRVTT_train.9k.csv")) == 3

    marker.unlink()  # a crashed, half-written dataset has no marker: rewritten
    ensure_synthetic_msrvtt(root, **{**kwargs, "num_train": 3})
    assert marker.exists()


def test_bad_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_synthetic_msrvtt(tmp_path, num_train=1, num_test=0, width=81, progress=False)
