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

import json
from pathlib import Path

import pandas as pd

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.records import VideoRecord


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """The CSV with ``columns`` as strings; a clear error naming the file if one is missing."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; found {list(frame.columns)}")
    return frame


def read_msrvtt_captions(path: Path) -> dict[str, list[str]]:
    """``video_id -> captions`` (in file order) from ``MSRVTT_data.json``'s ``sentences``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "sentences" not in data:
        raise ValueError(f"{path}: expected a JSON object with a 'sentences' list (MSRVTT_data.json format)")
    captions: dict[str, list[str]] = {}
    for i, sentence in enumerate(data["sentences"]):
        if "video_id" not in sentence or "caption" not in sentence:
            raise ValueError(f"{path}: sentences[{i}] lacks 'video_id' or 'caption': {sentence}")
        captions.setdefault(str(sentence["video_id"]), []).append(str(sentence["caption"]))
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
        ids = _read_csv(self.root / self.train_csv, ("video_id",))["video_id"].tolist()
        captions = read_msrvtt_captions(self.root / self.data_json)
        return [VideoRecord(v, Path(f"{v}.mp4"), list(captions.get(v, [])), search=video_names(v)) for v in ids]

    def _test_records(self) -> list[VideoRecord]:
        rows = _read_csv(self.root / self.test_csv, ("video_id", "sentence"))
        grouped: dict[str, list[str]] = {}
        for video_id, sentence in zip(rows["video_id"], rows["sentence"]):
            grouped.setdefault(video_id, []).append(sentence)
        return [VideoRecord(v, Path(f"{v}.mp4"), captions, search=video_names(v)) for v, captions in grouped.items()]
