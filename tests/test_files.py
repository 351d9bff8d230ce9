"""xclip_pl.data.files: video lookup by name, id lists, atomic writes, the default cache directory."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from xclip_pl.data.files import (
    VideoIndex,
    atomic_write,
    default_cache_dir,
    line_of,
    load_json,
    read_id_list,
    read_text,
    split_name,
)


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


@pytest.mark.parametrize("name, expected", [
    ("a.mp4", ("a", ".mp4")), ("a.b.MP4", ("a.b", ".mp4")), ("a.b.*", ("a.b", None)), ("-x_1.*", ("-x_1", None)),
])
def test_split_name(name, expected):
    assert split_name(name) == expected


def test_find_tries_names_in_order_and_prefers_known_video_suffixes(tmp_path):
    touch(tmp_path, "a.txt", "a.webm", "sub/a.avi", "deep/er/b.MP4", "v1.mov.mp4", "v1.mp4", ".hidden/c.mp4", ".d.mp4")
    index = VideoIndex(tmp_path)
    assert index.find(["a.*"]) == tmp_path / "sub" / "a.avi"  # .avi ranks before .webm, whatever the directory
    assert index.find(["a.webm"]) == tmp_path / "a.webm" and index.find(["a.txt"]) == tmp_path / "a.txt"
    assert index.find(["b.mp4"]) == tmp_path / "deep" / "er" / "b.MP4"  # suffix case ignored
    assert index.find(["v1.mov.mp4", "v1.mp4"]) == tmp_path / "v1.mov.mp4"
    assert index.find(["v1.mp4", "v1.mov.mp4"]) == tmp_path / "v1.mp4"
    assert index.find(["nothing.*", "a.mkv", "a.webm"]) == tmp_path / "a.webm"
    assert index.find(["c.*"]) is None and index.find([".d.*"]) is None and index.find(["d.*"]) is None  # hidden
    assert index.find([]) is None


def test_a_flat_index_ignores_subdirectories_and_is_built_once(tmp_path):
    touch(tmp_path, "top.webm", "sub/top.mp4", "sub/deep.mp4")
    flat = VideoIndex(tmp_path, recursive=False)
    assert flat.find(["top.mp4", "top.webm"]) == tmp_path / "top.webm" and flat.find(["deep.*"]) is None
    touch(tmp_path, "late.mp4")
    assert flat.find(["late.*"]) is None  # indexed on first use
    assert VideoIndex(tmp_path).find(["top.mp4"]) == tmp_path / "sub" / "top.mp4"


def test_read_id_list(tmp_path):
    (tmp_path / "ids.txt").write_text("  a \n\nb\r\n   \nc")
    assert read_id_list(tmp_path / "ids.txt") == ["a", "b", "c"]


def test_atomic_write_replaces_in_one_step_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "vocab.json"
    with atomic_write(target) as handle:
        handle.write("é first")
        assert not target.exists()  # nothing visible before the end
    assert target.read_text(encoding="utf-8") == "é first"
    with pytest.raises(RuntimeError), atomic_write(target, "wb") as handle:
        handle.write(b"partial")
        raise RuntimeError("interrupted")
    assert target.read_text(encoding="utf-8") == "é first" and os.listdir(tmp_path) == ["vocab.json"]
    with atomic_write(target, "wb") as handle:
        handle.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01" and os.listdir(tmp_path) == ["vocab.json"]


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir(tmp_path, "tokenizers") == tmp_path / ".xclip_pl" / "tokenizers"
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only root
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    other = default_cache_dir(tmp_path / "ro", "frame_cache")
    assert other.parent.parent == tmp_path / "home" / ".cache" / "xclip_pl" and other.name == "frame_cache"
    assert len(other.parent.name) == 12 and other != default_cache_dir(tmp_path / "ro2", "frame_cache")


def test_read_text_names_file_line_and_column_of_a_non_utf8_byte(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes("video,caption\nv1,ok\nv2,caf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}, line 3, column 7: not UTF-8 text \(byte 0xe9: "
                                         r".*re-encode it, e\.g\. `iconv -f latin1 -t utf-8 "):
        read_text(path)
    path.write_bytes("\ufeffvideo\n".encode())  # a byte-order mark is dropped
    assert read_text(path) == "video\n" and line_of("a\nb\nc", 4) == 3


def test_load_json_names_line_and_column_and_says_when_truncated(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"a": [1, 2],\n "b": x}')
    with pytest.raises(ValueError, match=r"d\.json, line 2, column 7: not valid JSON \(Expecting value\); fix the JSON"):
        load_json(path)
    path.write_text('{"sentences": [{"caption": "a man')
    with pytest.raises(ValueError, match=r"line 1, column 28: .*the file ends too early \(truncated\?\)"):
        load_json(path)
    path.write_text('{"ok": 1}')
    assert load_json(path) == {"ok": 1}
