"""ClipLoader's stored formats: ``npy`` (default) gives the decoded pixels exactly; ``jpeg`` is a lossy switch
that stores less and gives pixels near the decoded ones; read_into and what the key covers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_media import write_video
from PIL import Image

from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import decode_clip


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> VideoRecord:
    path = write_video(tmp_path_factory.mktemp("clip") / "c.mp4", num_frames=40, width=96, height=64, rate=8, seed=5)
    return VideoRecord("c", path, ["x"])


def test_npy_default_gives_the_decoded_pixels_from_the_cache(record, tmp_path):
    loader = ClipLoader(5, 48, cache_dir=tmp_path)
    assert loader.cache_format == "npy"
    expected = decode_clip(record.path, 5, 48)
    loader.load(record)  # fills the cache
    out = np.full((5, 48, 48, 3), 7, np.uint8)
    mask = loader.read_into(loader.cache_key(record), out)
    assert np.array_equal(out, expected[0]) and np.array_equal(mask, expected[1])


def test_jpeg_switch_is_smaller_and_close_and_reads_what_the_first_load_gave(record, tmp_path):
    raw, lossy = ClipLoader(5, 48, cache_dir=tmp_path / "raw"), ClipLoader(5, 48, cache_dir=tmp_path / "jpg",
                                                                            cache_format="jpeg", jpeg_quality=95)
    exact = raw.load(record)[0]
    first, _, ok = lossy.load(record)  # decoded, stored, and given back as the cache will give it
    again = lossy.load(record)[0]
    assert ok and np.array_equal(first, again)  # the same pixels on a miss and on a hit
    difference = np.abs(first.astype(int) - exact.astype(int))
    assert 0 < difference.max() <= 40 and difference.mean() < 3  # lossy, but close
    raw_bytes = sum(p.stat().st_size for p in (tmp_path / "raw").iterdir())
    jpeg_bytes = sum(p.stat().st_size for p in (tmp_path / "jpg").iterdir())
    assert jpeg_bytes < raw_bytes / 2
    frames_file = lossy.entry_paths(lossy.cache_key(record))[0]
    with Image.open(frames_file) as image:  # one strip of the 5 frames
        assert image.format == "JPEG" and image.size == (48, 5 * 48)


def test_format_and_quality_are_in_the_key_and_npy_keys_are_unchanged(record):
    """An npy key is the hash it was before the switch (here with ``resize: pil``, the other key-neutral choice)."""
    keys = {ClipLoader(5, 48).cache_key(record), ClipLoader(5, 48, cache_format="jpeg").cache_key(record),
            ClipLoader(5, 48, cache_format="jpeg", jpeg_quality=80).cache_key(record)}
    assert len(keys) == 3
    import hashlib
    stat = Path(record.path).stat()
    old_parts = (str(Path(record.path).resolve()), stat.st_size, stat.st_mtime_ns, 5, 48, 1.0, "uniform", None, None,
                 "timestamps", "tagged")
    assert ClipLoader(5, 48, resize="pil").cache_key(record) == hashlib.sha256(repr(old_parts).encode()).hexdigest()[:32]
    with pytest.raises(ValueError, match="cache_format"):
        ClipLoader(5, 48, cache_format="png")


@pytest.mark.parametrize("damage", ["truncated", "other shape", "garbage"])
def test_read_into_refuses_a_damaged_entry_and_load_decodes_again(record, tmp_path, damage):
    loader = ClipLoader(5, 48, cache_dir=tmp_path)
    frames = loader.load(record)[0]
    frames_file = loader.entry_paths(loader.cache_key(record))[0]
    if damage == "truncated":
        frames_file.write_bytes(frames_file.read_bytes()[:-100])
    elif damage == "other shape":
        np.save(frames_file, frames[:4])
    else:
        frames_file.write_bytes(b"garbage")
    assert loader.read_into(loader.cache_key(record), np.empty_like(frames)) is None
    assert np.array_equal(loader.load(record)[0], frames)
