"""MSVD in the layout the X-CLIP / CLIP4Clip scripts use, and the file lookup the other plugins share.

    root/train_list.txt, val_list.txt, test_list.txt   one video id per line (1200 / 100 / 670 videos)
    root/raw-captions.pkl     pickled dict video_id -> list of captions, each a list of tokens
    root/YouTubeClips/**/<video_id>.<ext>   found recursively by file stem (``.avi`` in the original release)

Train: every caption of every training video (about 48.8k pairs). Val and test keep every caption of a
video in its record: each caption is a query and each video is encoded once (multi-sentence evaluation).
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pytorch_lightning.utilities import rank_zero_warn

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.records import VideoRecord

MissingVideos = Literal["error", "skip"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


def _preference(path: Path) -> tuple[int, str]:
    """Known video suffixes first (in ``VIDEO_SUFFIXES`` order), then any other file; ties by path."""
    suffix = path.suffix.lower()
    rank = VIDEO_SUFFIXES.index(suffix) if suffix in VIDEO_SUFFIXES else len(VIDEO_SUFFIXES)
    return rank, str(path)


class VideoIndex:
    """Every file under a directory by file stem (recursive; hidden files and directories are skipped,
    e.g. the ``.xclip_pl`` cache). Built on first use, once.

    Args:
        directory: the directory to search.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._by_stem: dict[str, list[Path]] | None = None

    def _build(self) -> dict[str, list[Path]]:
        by_stem: dict[str, list[Path]] = {}
        for parent, dirs, files in os.walk(self.directory, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if not name.startswith("."):
                    path = Path(parent) / name
                    by_stem.setdefault(path.stem, []).append(path)
        return {stem: sorted(paths, key=_preference) for stem, paths in by_stem.items()}

    def find(self, stems: Sequence[str], suffix: str | None = None) -> Path | None:
        """The first file whose stem is one of ``stems`` (tried in order) and, if given, whose suffix is
        ``suffix``; among several, a known video suffix wins. None if there is none."""
        if self._by_stem is None:
            self._by_stem = self._build()
        for stem in stems:
            paths = [p for p in self._by_stem.get(stem, []) if suffix is None or p.suffix.lower() == suffix]
            if paths:
                return paths[0]
        return None


def read_id_list(path: Path) -> list[str]:
    """The ids of a one-id-per-line list file, in order (surrounding blanks and empty lines ignored)."""
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def drop_missing_videos(records: list[VideoRecord], mode: MissingVideos, where: str) -> list[VideoRecord]:
    """``records`` unchanged (``mode="error"``: the base class reports missing files), or without the
    records whose file is missing, with one warning naming how many and which (``mode="skip"``)."""
    if mode == "error":
        return records
    kept = [r for r in records if Path(r.path).is_file()]
    missing = [r.video_id for r in records if not Path(r.path).is_file()]
    if missing:
        shown = ", ".join(repr(v) for v in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        rank_zero_warn(f"{where}: skipping {len(missing)} of {len(records)} records whose video is missing "
                       f"(missing_videos='skip'): {shown}")
    return kept


def read_msvd_captions(path: Path) -> dict[str, list[str]]:
    """``video_id -> captions`` from ``raw-captions.pkl``; token lists are joined with single spaces."""
    try:
        with open(path, "rb") as handle:
            data = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise ValueError(f"{path}: not a readable pickle ({error}); expected the MSVD raw-captions.pkl") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict video_id -> list of captions, got {type(data).__name__}")
    captions: dict[str, list[str]] = {}
    for video_id, items in data.items():
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise ValueError(f"{path}: captions of {video_id!r} must be a list of captions, got {type(items).__name__}")
        captions[str(video_id)] = [c.strip() if isinstance(c, str) else " ".join(map(str, c)) for c in items]
    return captions


class MSVDDataModule(VideoTextDataModule):
    """MSVD: train on every caption; val and test keep all captions per video (multi-sentence evaluation).

    Args:
        root: the MSVD directory (list files, caption pickle and ``video_dir``).
        train_list: training video ids, one per line, under ``root``.
        val_list: validation video ids, one per line, under ``root``.
        test_list: test video ids, one per line, under ``root``.
        caption_file: pickled dict ``video_id -> list of captions`` (each a token list) under ``root``.
        video_dir: directory searched recursively for ``<video_id>.<any extension>``, relative to ``root``.
        missing_videos: ``error`` stops with the list of missing files; ``skip`` drops those videos with a warning.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule`.
    """

    def __init__(self, root: str, train_list: str = "train_list.txt", val_list: str = "val_list.txt",
                 test_list: str = "test_list.txt", caption_file: str = "raw-captions.pkl",
                 video_dir: str = "YouTubeClips", missing_videos: MissingVideos = "error", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.caption_file, self.video_dir, self.missing_videos = caption_file, video_dir, missing_videos
        self.videos = VideoIndex(self.root / video_dir)

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        return [(f"{split} list ({split}_list)", self.root / self.lists[split]),
                ("caption file (caption_file)", self.root / self.caption_file),
                ("video directory (video_dir)", self.root / self.video_dir)]

    def video_path(self, video_id: str) -> Path:
        """The file under ``video_dir`` whose stem is the id (``<video_dir>/<id>.avi`` if there is none)."""
        return self.videos.find([video_id]) or self.root / self.video_dir / f"{video_id}.avi"

    def load_records(self, split: Split) -> list[VideoRecord]:
        ids = read_id_list(self.root / self.lists[split])
        captions = read_msvd_captions(self.root / self.caption_file)
        records = [VideoRecord(v, self.video_path(v), list(captions.get(v, []))) for v in ids]
        return drop_missing_videos(records, self.missing_videos, f"{type(self).__name__} [{split}]")
