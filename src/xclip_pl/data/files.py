"""File lookup shared by the dataset plugins: find videos by file stem, read id lists, drop missing videos."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pytorch_lightning.utilities import rank_zero_warn

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
