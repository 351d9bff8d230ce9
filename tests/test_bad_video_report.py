"""BadVideoReport: rank 0 merges every rank's log into one file and warns with the list; other ranks and
runs without a log write nothing."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from xclip_pl.callbacks.bad_videos import BadVideoReport
from xclip_pl.data.bad_videos import BadVideoLog


def _trainer(log, rank_zero=True):
    return SimpleNamespace(datamodule=SimpleNamespace(bad_video_log=log), is_global_zero=rank_zero)


def test_report_merges_every_rank_and_warns(tmp_path):
    logs = [BadVideoLog(tmp_path / "bad_videos", rank=r) for r in (0, 1)]
    for log in logs:
        log.reset()
    logs[0].record("/v/a.mp4", "a", "Invalid data")
    logs[1].record("/v/b.mp4", "b", "moov atom\nnot found")
    logs[1].record("/v/a.mp4", "a", "again")  # the same file on another rank: listed once
    with pytest.warns(UserWarning, match=r"2 video file\(s\) could not be decoded"):
        BadVideoReport("report.tsv").teardown(_trainer(logs[0]), None, "fit")
    rows = (tmp_path / "report.tsv").read_text().splitlines()
    assert rows == ["path\tvideo_id\terror", "/v/a.mp4\ta\tInvalid data", "/v/b.mp4\tb\tmoov atom not found"]


def test_nothing_on_other_ranks_or_without_bad_files(tmp_path, recwarn):
    log = BadVideoLog(tmp_path / "bad_videos")
    log.reset()
    BadVideoReport().teardown(_trainer(log), None, "test")  # no bad file
    log.record("/v/a.mp4", "a", "boom")
    BadVideoReport().teardown(_trainer(log, rank_zero=False), None, "test")
    BadVideoReport().teardown(_trainer(None), None, "test")
    assert not (tmp_path / "bad_videos.tsv").exists() and not recwarn.list
