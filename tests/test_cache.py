"""xclip_pl.data.cache.ClipLoader: decoding through the .npy frame cache, and what its key covers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_media import write_video

from xclip_pl.data import video
from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import VideoDecodeError, decode_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "c.mp4", num_frames=40, rate=8, seed=3)  # 5 s


def spy_decodes(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    original = video.decode_clip
    monkeypatch.setattr(video, "decode_clip", lambda *a, **k: calls.append(k) or original(*a, **k))
    return calls


def test_the_key_covers_what_changes_frames_not_how_fast_they_are_decoded(clip, tmp_path):
    record = VideoRecord("c", clip, ["x"])
    key = ClipLoader(4, 32, cache_dir=tmp_path).cache_key(record)
    assert ClipLoader(4, 32, cache_dir=tmp_path, skip_nonref=False, decode_threads=4).cache_key(record) == key
    changed = [ClipLoader(5, 32), ClipLoader(4, 48), ClipLoader(4, 32, fps=2.0), ClipLoader(4, 32, sampling="head"),
               ClipLoader(4, 32, frame_times="reference"), ClipLoader(4, 32, color_matrix="bt601")]
    assert len({key, *(loader.cache_key(record) for loader in changed)}) == 1 + len(changed)
    assert ClipLoader(4, 32).cache_key(VideoRecord("c", clip, ["x"], start=1.0)) != key


def test_load_decodes_once_then_reads_the_cache(clip, tmp_path, monkeypatch):
    calls = spy_decodes(monkeypatch)
    loader = ClipLoader(6, 32, cache_dir=tmp_path / "cache", skip_nonref=False, decode_threads=2)
    record = VideoRecord("c", clip, ["x"])
    frames, mask, ok = loader.load(record)
    expected = decode_clip(clip, 6, 32)  # (not spied: imported before) seconds 0..4 of 5 s
    assert ok and np.array_equal(frames, expected[0]) and np.array_equal(mask, expected[1]) and mask.sum() == 5
    assert len(calls) == 1 and calls[0]["skip_nonref"] is False and calls[0]["decode_threads"] == 2
    again = loader.load(record)
    assert len(calls) == 1 and again[2] and np.array_equal(again[0], frames)  # from the cache: no decode
    key = loader.cache_key(record)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"{key}.frames.npy", f"{key}.mask.npy"]


def test_a_damaged_cache_entry_is_decoded_again(clip, tmp_path):
    loader = ClipLoader(3, 32, cache_dir=tmp_path)
    record = VideoRecord("c", clip, ["x"])
    frames = loader.load(record)[0]
    (tmp_path / f"{loader.cache_key(record)}.frames.npy").write_bytes(b"garbage")
    assert np.array_equal(loader.load(record)[0], frames)


def test_a_bad_file_gives_an_empty_clip_or_raises_when_strict(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    record = VideoRecord("bad", bad, ["x"])
    with pytest.warns(RuntimeWarning, match="video 'bad'"):
        frames, mask, ok = ClipLoader(3, 16).load(record)
    assert not ok and frames.shape == (3, 16, 16, 3) and not frames.any() and not mask.any()
    with pytest.raises(VideoDecodeError, match=f"{bad} \\(video 'bad'\\) could not be decoded"):
        ClipLoader(3, 16, strict=True).load(record)
