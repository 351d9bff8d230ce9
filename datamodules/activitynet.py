"""ActivityNet Captions in the layout the X-CLIP / CLIP4Clip scripts use.

    root/train_ids.json, val_ids.json   JSON lists of "v_<youtube id>"
    root/train.json, val_1.json         {"v_<id>": {"duration", "timestamps", "sentences"}, ...}
    root/videos/**/v_<id>.<ext>         or <id>.<ext>, found recursively by file stem

Paragraph retrieval: a video's sentences (each stripped) joined with a space into ONE caption, the whole
video decoded (the timestamps are not used). A listed video without sentences is left out, as the reference
does (it iterates over the caption JSON's videos). Evaluation is 1:1, paragraph <-> video. With
``frame_times: reference`` the window is the reference's ``[0, ceil(duration)]`` seconds (``duration`` of
the caption JSON; its "seconds" are ``int(fps)`` frames, so at 29.97 fps this cuts the last ~3 %).
"""
from __future__ import annotations

import math
from pathlib import Path

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import load_json
from xclip_pl.data.records import VideoRecord


def read_id_json(path: Path) -> list[str]:
    """The ids of a JSON list file (``train_ids.json`` / ``val_ids.json``), in order."""
    data = load_json(path)
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise ValueError(f"{path}: expected a JSON list of video ids (strings like 'v_QOlSCBRmfWY')")
    return data


def read_activitynet_paragraphs(path: Path) -> dict[str, str]:
    """``v_<id> -> paragraph``: the entry's ``sentences``, each stripped, joined with a space."""
    data = load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object 'v_<id>' -> {{duration, timestamps, sentences}}")
    paragraphs = {}
    for key, entry in data.items():
        sentences = entry.get("sentences") if isinstance(entry, dict) else None
        if not isinstance(sentences, list):
            raise ValueError(f"{path}: entry {key!r} lacks a 'sentences' list: {str(entry)[:200]}. Fix the entry")
        paragraphs[key] = " ".join(s for s in (str(s).strip() for s in sentences) if s)
    return paragraphs


def read_activitynet_durations(path: Path) -> dict[str, float]:
    """``v_<id> -> duration`` in seconds, from the entries' ``duration``."""
    data = load_json(path)
    durations = {}
    for key, entry in data.items():
        duration = entry.get("duration") if isinstance(entry, dict) else None
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise ValueError(f"{path}: entry {key!r} lacks a numeric 'duration' (seconds), which data.frame_times: "
                             "reference needs for the reference's window [0, ceil(duration)]. Fix the entry or use "
                             "data.frame_times: timestamps")
        durations[key] = float(duration)
    return durations


class ActivityNetDataModule(VideoTextDataModule):
    """ActivityNet Captions: one paragraph per video, whole videos; ``val_1`` is both val and test.

    As in the reference there is no separate test split: the val split (``val_ids`` + ``val_json``,
    i.e. ``val_1.json``, 4917 videos) serves as val AND test, so model selection happens on the test set.

    Args:
        root: the ActivityNet Captions directory (id lists, caption JSONs and ``video_dir``).
        train_ids: JSON list of the training ids (``v_<id>``) under ``root``.
        val_ids: JSON list of the val (= test) ids under ``root``.
        train_json: training captions (``v_<id>`` -> ``duration`` / ``timestamps`` / ``sentences``) under ``root``.
        val_json: val (= test) captions under ``root`` (the reference uses ``val_1.json``).
        video_dir: directory searched recursively for ``v_<id>.<ext>`` or ``<id>.<ext>``, relative to ``root``.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule` (reference for
            paragraphs: ``max_words=64``, ``max_frames=64``).
    """

    def __init__(self, root: str, train_ids: str = "train_ids.json", val_ids: str = "val_ids.json",
                 train_json: str = "train.json", val_json: str = "val_1.json", video_dir: str = "videos",
                 **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.id_files = {"train": train_ids, "val": val_ids, "test": val_ids}
        self.jsons = {"train": train_json, "val": val_json, "test": val_json}
        self.video_dir = video_dir

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        name = "train" if split == "train" else "val"
        return [(f"{split} ids ({name}_ids)", self.root / self.id_files[split]),
                (f"{split} captions ({name}_json)", self.root / self.jsons[split]),
                ("video directory (video_dir)", self.root / self.video_dir)]

    def load_records(self, split: Split) -> list[VideoRecord]:
        """One paragraph record per listed id; its file is the one under ``video_dir`` whose stem is the id
        (``v_<id>``), else the id without / with its ``v_`` prefix (``<video_dir>/<id>.mp4`` if there is none)."""
        ids = read_id_json(self.root / self.id_files[split])
        paragraphs = read_activitynet_paragraphs(self.root / self.jsons[split])
        records = [VideoRecord(v, Path(f"{v}.mp4"), [paragraphs[v]] if paragraphs.get(v) else [],
                               search=(f"{v}.*", f"{v[2:]}.*" if v.startswith("v_") else f"v_{v}.*")) for v in ids]
        if self.frame_times == "reference":  # the reference's window: [0, ceil(duration)] whole seconds
            durations = read_activitynet_durations(self.root / self.jsons[split])
            for record in records:
                if record.video_id in durations:
                    record.start, record.end = 0.0, float(math.ceil(durations[record.video_id]))
        return records
