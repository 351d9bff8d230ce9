"""xclip_pl.data.records: the rules the base datamodule applies to every plugin's records, and its report."""
from __future__ import annotations

from pathlib import Path

import pytest

from xclip_pl.data.records import (
    VideoRecord,
    caption_pairs,
    drop_missing_videos,
    drop_videos_without_captions,
    examples,
    find_record_problems,
    merge_origins,
    missing_videos_hint,
    problem_report,
)


def records(tmp_path: Path, captions: dict[str, list[str]], on_disk: set[str]) -> list[VideoRecord]:
    for video_id in on_disk:
        (tmp_path / f"{video_id}.mp4").write_bytes(b"")
    return [VideoRecord(v, tmp_path / f"{v}.mp4", c) for v, c in captions.items()]


def test_examples():
    assert examples(["a"]) == "'a'"
    assert examples([str(i) for i in range(7)], limit=2) == "'0', '1' and 5 more"


def test_caption_pairs_number_videos_in_record_order(tmp_path):
    assert caption_pairs(records(tmp_path, {"a": ["x", "y"], "b": [], "c": ["z"]}, set())) == [
        (0, "x"), (0, "y"), (2, "z")]


def test_videos_without_captions_are_left_out_with_one_warning(tmp_path):
    given = records(tmp_path, {"a": ["x"], "b": [], "c": ["y"], "d": []}, set())
    with pytest.warns(UserWarning, match=r"^DM \[val\]: 2 of 4 videos have no caption in the annotations and are "
                                         r"left out: 'b', 'd'$"):
        kept = drop_videos_without_captions(given, "DM [val]")
    assert [r.video_id for r in kept] == ["a", "c"]
    assert drop_videos_without_captions(kept, "DM [val]") == kept


def test_missing_videos_error_keeps_them_skip_drops_them(tmp_path):
    given = records(tmp_path, {"a": ["x"], "b": ["y"], "c": ["z"]}, {"b"})
    assert drop_missing_videos(given, "error", "DM [train]") is given
    with pytest.warns(UserWarning, match=r"DM \[train\]: skipping 2 of 3 records whose video is missing "
                                         r"\(missing_videos='skip'\): 'a', 'c'"):
        assert [r.video_id for r in drop_missing_videos(given, "skip", "DM [train]")] == ["b"]


def test_find_record_problems(tmp_path):
    assert find_record_problems([]) == ["the split is empty (no videos)"]
    given = records(tmp_path, {"a": ["x", " "], "b": ["y"]}, {"b"}) + [VideoRecord("b", tmp_path / "b.mp4", ["z"])]
    problems = find_record_problems(given)
    assert problems == [(f"1 of 3 videos named in the annotations are missing on disk: 'a' (e.g. expected "
                         f"{tmp_path / 'a.mp4'})"), "1 video id(s) listed more than once: 'b'. Keep one line per video",
                        "1 empty caption(s): video 'a', caption 1. Write the caption or remove the entry"]
    assert find_record_problems(given, check_files=False) == problems[1:]


def test_record_problems_name_the_file_and_line_when_records_know_them(tmp_path):
    given = [VideoRecord("a", tmp_path / "a.mp4", ["x", ""], origin="t.csv, line 2",
                         caption_origins=("d.json, sentences[0]", "d.json, sentences[3]")),
             VideoRecord("b", tmp_path / "b.mp4", ["y"], origin="t.csv, line 3"),
             VideoRecord("a", tmp_path / "a.mp4", ["x"], origin="t.csv, line 5")]
    assert find_record_problems(given, check_files=False) == [
        "1 video id(s) listed more than once: 'a' (t.csv, lines 2 and 5). Keep one line per video",
        "1 empty caption(s): d.json, sentences[3] (video 'a'). Write the caption or remove the entry"]
    assert merge_origins(["f, line 1", "f, line 2", "f, line 9", "g.json, [3]", "h, line 4"]) == \
        "f, lines 1, 2 and 9; g.json, [3]; h, line 4"


def test_problem_report_merges_splits_and_counts_missing_videos():
    problems = [("train", "p1"), ("val", "p1"), ("val", "p2"), ("test", "p3")]
    report = problem_report("DM(root='r')", problems, {"train": 2, "val": 1, "other": 5}, "datamodules.x.DM")
    assert report.startswith("DM(root='r'): 3 problem(s) with the dataset:\n  - [train, val] p1\n  - [val] p2\n"
                             "  - [test] p3\n3 videos are missing (train: 2, val: 1): add the file(s)")
    assert "`data.init_args.missing_videos: skip`" in report
    assert report.endswith("(see `xclip-pl fit --data.help datamodules.x.DM`).")
    assert missing_videos_hint({}) == "" and "1 video is missing (test: 1)" in missing_videos_hint({"test": 1})
