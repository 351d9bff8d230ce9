"""MSR-VTT in the layout the X-CLIP / CLIP4Clip scripts use.

    root/MSRVTT_data.json            {"videos": [...], "sentences": [{"video_id", "caption", ...}]}
    root/MSRVTT_train.9k.csv         column video_id (the 9k split; MSRVTT_train.7k.csv for the 7k one)
    root/MSRVTT_JSFUSION_test.csv    columns key, vid_key, video_id, sentence (the 1k-A test split)
    root/videos/all/<video_id>.mp4   (falling back to <video_id>.webm)

Train: every JSON caption of every train-CSV video (9000 x 20 = 180k pairs; a CSV video without captions is
left out, as in the reference). Val = test = the JSFusion
CSV, one caption per video, as in the reference: model selection therefore happens on the test set.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import load_json, read_text
from xclip_pl.data.records import VideoRecord


def read_csv_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of every data row of a UTF-8 CSV with a header; a clear error naming the file
    (and line) if it is not UTF-8 or lacks one of ``columns``."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    found = [c.strip() for c in reader.fieldnames or []]
    absent = [c for c in columns if c not in found]
    if absent:
        raise ValueError(f"{path}, line 1: missing column(s) {absent}; found {found}. The header line must name "
                         f"the columns {list(columns)}")
    reader.fieldnames = found
    rows = []
    for row in reader:
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue  # a blank line
        rows.append((reader.line_num, {c: (row.get(c) or "").strip() for c in found}))
    return rows


def read_msrvtt_captions(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``video_id -> [(caption, where)]`` (in file order) from ``MSRVTT_data.json``'s ``sentences``; ``where``
    is ``"<path>, sentences[<i>]"``."""
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
        raise ValueError(f"{path}: expected a JSON object with a 'sentences' list (MSRVTT_data.json format)")
    captions: dict[str, list[tuple[str, str]]] = {}
    for i, sentence in enumerate(data["sentences"]):
        if not isinstance(sentence, dict) or "video_id" not in sentence or "caption" not in sentence:
            raise ValueError(f"{path}, sentences[{i}]: lacks 'video_id' or 'caption': {str(sentence)[:200]}. "
                             "Fix the entry")
        captions.setdefault(str(sentence["video_id"]), []).append((str(sentence["caption"]), f"{path}, sentences[{i}]"))
    return captions


def video_names(video_id: str) -> tuple[str, str]:
    """``<id>.mp4``, then ``<id>.webm``: the files a video is looked up by, directly in ``video_dir``."""
    return f"{video_id}.mp4", f"{video_id}.webm"


class MSRVTTDataModule(VideoTextDataModule):
    """MSR-VTT: 9k (or 7k) training videos with all their captions; 1k-A JSFusion test (val = test).

    Args:
        root: the MSR-VTT directory (annotation files and ``video_dir``).
        train_csv: training video list under ``root`` (``MSRVTT_train.9k.csv`` or ``MSRVTT_train.7k.csv``).
        test_csv: the 1k-A test list with one ``sentence`` per video under ``root``; also the val split.
        data_json: the annotation JSON with every caption (``sentences``) under ``root``.
        video_dir: directory of ``<video_id>.mp4`` (or ``.webm``) files, relative to ``root``.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule`.
    """

    search_video_subdirectories = False

    def __init__(self, root: str, train_csv: str = "MSRVTT_train.9k.csv",
                 test_csv: str = "MSRVTT_JSFUSION_test.csv", data_json: str = "MSRVTT_data.json",
                 video_dir: str = "videos/all", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.train_csv, self.test_csv, self.data_json, self.video_dir = train_csv, test_csv, data_json, video_dir

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        videos = ("video directory (video_dir)", self.root / self.video_dir)
        if split == "train":
            return [("annotation file (data_json)", self.root / self.data_json),
                    ("train list (train_csv)", self.root / self.train_csv), videos]
        return [("test list (test_csv)", self.root / self.test_csv), videos]

    def load_records(self, split: Split) -> list[VideoRecord]:
        """Train from the CSV and the JSON, val = test from the JSFusion CSV; each file is
        ``<video_dir>/<id>.mp4``, or ``.webm`` when only that exists."""
        if split == "train":
            return self._train_records()
        return self._test_records()

    def _train_records(self) -> list[VideoRecord]:
        path = self.root / self.train_csv
        rows = read_csv_rows(path, ("video_id",))
        captions = read_msrvtt_captions(self.root / self.data_json)
        records = []
        for line, row in rows:
            video_id = row["video_id"]
            if not video_id:
                raise ValueError(f"{path}, line {line}: empty video_id. Fill it in or remove the line")
            found = captions.get(video_id, [])
            records.append(VideoRecord(video_id, Path(f"{video_id}.mp4"), [c for c, _ in found], search=video_names(video_id),
                                       origin=f"{path}, line {line}", caption_origins=tuple(w for _, w in found)))
        return records

    def _test_records(self) -> list[VideoRecord]:
        path = self.root / self.test_csv
        grouped: dict[str, list[tuple[int, str]]] = {}
        for line, row in read_csv_rows(path, ("video_id", "sentence")):
            if not row["video_id"]:
                raise ValueError(f"{path}, line {line}: empty video_id. Fill it in or remove the line")
            grouped.setdefault(row["video_id"], []).append((line, row["sentence"]))
        return [VideoRecord(v, Path(f"{v}.mp4"), [c for _, c in rows], search=video_names(v),
                            origin=f"{path}, line {rows[0][0]}", caption_origins=tuple(f"{path}, line {n}" for n, _ in rows))
                for v, rows in grouped.items()]
