"""``write_synthetic``: each format's files are the real format, decodable, deterministic, generated once."""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import av
import pytest

from xclip_pl.data.synthetic import write_synthetic_msrvtt
from xclip_pl.data.synthetic_formats import FORMATS, ensure_synthetic, write_synthetic

TINY = dict(num_train=3, num_val=2, num_test=2, captions_per_video=3, seconds=2.0, width=32, height=32)


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("formats")
    return {f: write_synthetic(base / f, f, seed=1, **TINY) for f in FORMATS}


def test_msvd_pickle_lists_and_avi_videos(trees):
    root = trees["msvd"]
    lists = {s: (root / f"{s}_list.txt").read_text().split() for s in ("train", "val", "test")}
    assert [len(v) for v in lists.values()] == [3, 2, 2]
    captions = pickle.loads((root / "raw-captions.pkl").read_bytes())
    assert set(captions) == {v for ids in lists.values() for v in ids}
    first = captions[lists["train"][0]]
    assert len(first) == 3 and all(isinstance(t, str) and " " not in t for t in first[0])
    with av.open(str(root / "YouTubeClips" / f"{lists['test'][0]}.avi")) as container:
        assert container.format.name == "avi" and container.streams.video[0].codec_context.name == "mpeg4"


def test_lsmdc_six_tab_separated_fields(trees):
    root = trees["lsmdc"]
    counts = {"LSMDC16_annos_training.csv": 3, "LSMDC16_annos_val.csv": 2, "LSMDC16_challenge_1000_publictect.csv": 2}
    for name, count in counts.items():
        lines = (root / name).read_text().splitlines()
        assert len(lines) == count and all(len(line.split("\t")) == 6 for line in lines)
        for line in lines:
            clip_id = line.split("\t")[0]
            assert len(list(root.glob(f"videos/*/{clip_id}.mp4"))) == 1
    assert '"SOMEONE"' in (root / "LSMDC16_annos_training.csv").read_text()  # quotes, no CSV quoting


def test_didemo_json_and_file_names(trees):
    root = trees["didemo"]
    entries = json.loads((root / "train_data.json").read_text())
    assert {"description", "times", "video"} <= entries[0].keys() and len(entries) == 3 * 3
    ids = (root / "train_list.txt").read_text().split()
    assert [e["video"] for e in entries[:3]] == ids  # interleaved, as the real files
    assert ids[0].endswith(".mov") and (root / "videos" / f"{ids[0]}.mp4").is_file()
    assert (root / "videos" / f"{ids[1].rsplit('.', 1)[0]}.mp4").is_file()


def test_activitynet_json(trees):
    root = trees["activitynet"]
    assert len(json.loads((root / "train_ids.json").read_text())) == 3
    val_ids = json.loads((root / "val_ids.json").read_text())
    assert len(val_ids) == 2 and all(v.startswith("v_") for v in val_ids)  # num_test; val = test
    entry = json.loads((root / "val_1.json").read_text())[val_ids[0]]
    assert entry["duration"] == 2.0 and len(entry["timestamps"]) == len(entry["sentences"]) == 3
    assert (root / "videos" / f"{val_ids[0]}.mp4").is_file() or (root / "videos" / f"{val_ids[0][2:]}.mp4").is_file()


def test_folder_csv(trees):
    with open(trees["folder"] / "captions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["video", "caption", "split", "start", "end"] and len(rows) == 7 * 3
    assert all((trees["folder"] / r["video"]).is_file() for r in rows)
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_same_clips_as_msrvtt_and_deterministic(tmp_path, trees):
    msrvtt = json.loads((trees["msrvtt"] / "MSRVTT_data.json").read_text())
    reference = write_synthetic_msrvtt(tmp_path / "ref", num_train=3, num_test=2, captions_per_video=3, seed=1,
                                       width=32, height=32, seconds=2.0, progress=False)
    assert json.loads((reference / "MSRVTT_data.json").read_text()) == msrvtt
    folder = [r["caption"] for r in csv.DictReader(open(trees["folder"] / "captions.csv", newline=""))]
    assert folder[:3] == [s["caption"] for s in msrvtt["sentences"][:3]]  # clip 0 of both
    again = write_synthetic(tmp_path / "again", "folder", seed=1, **TINY)
    assert (again / "captions.csv").read_text() == (trees["folder"] / "captions.csv").read_text()


def test_ensure_generates_once(tmp_path, monkeypatch):
    root = ensure_synthetic(tmp_path / "d", "didemo", **TINY)
    import xclip_pl.data.synthetic_formats as formats

    monkeypatch.setattr(formats, "_render_clips", lambda *a, **k: pytest.fail("regenerated"))
    assert ensure_synthetic(root, "didemo", **TINY) == root


@pytest.mark.parametrize("format,kwargs,message", [
    ("webvid", {}, "unknown format 'webvid'"),
    ("msvd", dict(num_train=0, num_val=0, num_test=0), "at least one clip"),
    ("lsmdc", dict(num_train=-1), "num_train, num_val, num_test >= 0"),
    ("didemo", dict(captions_per_video=0), "captions_per_video >= 1"),
    ("folder", dict(width=33), "even and >= 32"),
    ("activitynet", dict(seconds=0.0), "at least one frame"),
    ("msrvtt", dict(num_train=0, num_test=0), "not both 0"),
])
def test_bad_arguments(tmp_path, format, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_synthetic(tmp_path / "data" / "nested", format, **kwargs)
    assert list(tmp_path.iterdir()) == []  # rejected before any directory was created


def test_ensure_regenerates_when_arguments_change(tmp_path):
    root = ensure_synthetic(tmp_path / "d", "lsmdc", **TINY)
    ensure_synthetic(root, "lsmdc", **{**TINY, "num_test": 1})
    assert len((root / "LSMDC16_challenge_1000_publictect.csv").read_text().splitlines()) == 1
