"""Your own videos: one annotation table (``.csv`` or ``.jsonl``) next to a folder of video files.

    root/captions.csv          video,caption[,split][,start][,end]   (a header line; quoting as in any CSV)
    root/captions.jsonl        {"video": ..., "caption": ..., "split": ..., "start": ..., "end": ...} per line
    root/<video_dir>/<video>   the file named in the ``video`` column (any container PyAV reads)

Columns:

- ``video``: path of the file relative to ``video_dir`` (or absolute); it is also the video's id.
- ``caption``: one caption. A video may have several rows: their captions form one record (training uses
  every caption; evaluation makes each caption a query and encodes the video once).
- ``split`` (optional): ``train``, ``val`` or ``test``; a video belongs to one split. If no row is ``test``,
  test = val; if no row is ``val``, val = test (each logged).
- ``start``, ``end`` (optional): the seconds to decode (empty = start / end of the file); every row of a
  video must give the same values.

Without a ``split`` column a deterministic ``val_fraction`` of the videos (chosen by a hash of the
``video`` value, so independent of row order) is held out as val, and test = val; the rest is train.
``val_fraction: 0`` evaluates on the training videos (logged).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from pytorch_lightning.utilities import rank_zero_info

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import read_text
from xclip_pl.data.records import VideoRecord

SPLITS = ("train", "val", "test")
REQUIRED = ("video", "caption")


@dataclass(frozen=True)
class Row:
    """One annotation row and where it is (``line``: 1-based line number in the file)."""

    line: int
    video: str
    caption: str
    split: str | None
    start: float | None
    end: float | None


def _seconds(value: object, column: str, where: str) -> float | None:
    """A time cell as seconds (None when empty); a ValueError naming the place otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column}={value!r} is not a number of seconds; fix it or leave it empty") from None
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{where}: {column}={value!r} must be a non-negative number of seconds")
    return seconds


def make_row(cells: dict, line: int, path: Path, has_split: bool) -> Row:
    """Validate one row's cells (a CSV row or a JSONL object)."""
    where = f"{path}, line {line}"
    absent = [c for c in REQUIRED if c not in cells or cells[c] is None]
    if absent:
        raise ValueError(f"{where}: missing {absent}; every row needs 'video' and 'caption'")
    video, caption = str(cells["video"]).strip(), str(cells["caption"]).strip()
    if not video or not caption:
        raise ValueError(f"{where}: empty {'video' if not video else 'caption'}; fill it in or remove the row")
    split = str(cells.get("split") or "").strip() if has_split else None
    if has_split and split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}; use one of {list(SPLITS)}")
    start, end = _seconds(cells.get("start"), "start", where), _seconds(cells.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise ValueError(f"{where}: end={end} is not after start={start}")
    return Row(line, video, caption, split, start, end)


def _read_csv(path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    absent = [c for c in REQUIRED if c not in columns]
    if absent:
        raise ValueError(f"{path}, line 1: missing column(s) {absent} in the header {columns}; the file needs "
                         "columns 'video' and 'caption' (optional: 'split', 'start', 'end')")
    reader.fieldnames = columns
    return [make_row(cells, reader.line_num, path, "split" in columns) for cells in reader]


def _read_jsonl(path: Path) -> list[Row]:
    objects = []
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        try:
            cells = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {line}: not valid JSON ({error.msg}); one object per line") from None
        if not isinstance(cells, dict):
            raise ValueError(f"{path}, line {line}: expected a JSON object, got {type(cells).__name__}")
        objects.append((line, cells))
    has_split = any("split" in cells for _, cells in objects)
    return [make_row(cells, line, path, has_split) for line, cells in objects]


def read_annotations(path: Path) -> list[Row]:
    """The rows of a ``.csv`` or ``.jsonl`` annotation file, validated."""
    readers = {".csv": _read_csv, ".jsonl": _read_jsonl}
    if path.suffix.lower() not in readers:
        raise ValueError(f"{path}: unsupported annotation file type {path.suffix!r}; use .csv or .jsonl")
    return readers[path.suffix.lower()](path)


def group_rows(rows: list[Row], path: Path) -> dict[str, list[Row]]:
    """``video -> rows`` (first-appearance order); a video's rows must agree on split, start and end."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        first = groups.setdefault(row.video, [row])[0]
        if row is first:
            continue
        for name in ("split", "start", "end"):
            if getattr(row, name) != getattr(first, name):
                raise ValueError(f"{path}, line {row.line}: video {row.video!r} has {name}={getattr(row, name)!r} "
                                 f"but {getattr(first, name)!r} on line {first.line}; all rows of a video must agree")
        groups[row.video].append(row)
    return groups


def holdout(videos: list[str], fraction: float) -> set[str]:
    """A deterministic ``fraction`` of ``videos`` (by SHA-1 of the name; at least one, never all)."""
    if fraction <= 0 or len(videos) < 2:
        return set()
    count = min(max(1, round(fraction * len(videos))), len(videos) - 1)
    return set(sorted(videos, key=lambda v: hashlib.sha1(v.encode()).hexdigest())[:count])


class FolderDataModule(VideoTextDataModule):
    """Your own videos and captions, from one ``.csv`` / ``.jsonl`` table (see the module docstring).

    Args:
        root: the dataset directory.
        annotations: the annotation table (``.csv`` with a header, or ``.jsonl``), relative to ``root`` or absolute.
        video_dir: directory the ``video`` column is relative to, relative to ``root`` or absolute.
        val_fraction: without a ``split`` column, the share of videos held out as val (= test); ignored otherwise.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule`.
    """

    def __init__(self, root: str, annotations: str = "captions.csv", video_dir: str = ".", val_fraction: float = 0.1,
                 **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"data.init_args.val_fraction: got {val_fraction!r}, need a number in [0, 1) (the share of videos "
                             "held out as val without a split column)")
        self.annotations, self.video_dir, self.val_fraction = annotations, video_dir, val_fraction
        self._splits: dict[str, list[VideoRecord]] | None = None

    @property
    def annotation_path(self) -> Path:
        return self.root / Path(self.annotations).expanduser()  # an absolute path replaces root

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        return [("annotation file (annotations)", self.annotation_path),
                ("video directory (video_dir)", self.video_root)]

    @staticmethod
    def _record(rows: list[Row]) -> VideoRecord:
        """The video of ``rows`` (its path as the ``video`` column gives it) with their captions."""
        return VideoRecord(rows[0].video, Path(rows[0].video).expanduser(), [r.caption for r in rows], rows[0].start,
                           rows[0].end)

    def _assign_splits(self, groups: dict[str, list[Row]]) -> dict[str, list[str]]:
        """``split -> videos``, from the ``split`` column or by ``val_fraction`` (val = test)."""
        if next(iter(groups.values()))[0].split is not None:
            return {s: [v for v, rows in groups.items() if rows[0].split == s] for s in SPLITS}
        held = holdout(list(groups), self.val_fraction)
        evaluation = [v for v in groups if v in held] or list(groups)
        if not held:
            rank_zero_info(f"{type(self).__name__}: no 'split' column and nothing held out (val_fraction="
                           f"{self.val_fraction}): val and test are the training videos")
        return {"train": [v for v in groups if v not in held], "val": evaluation, "test": evaluation}

    def _load_all(self) -> dict[str, list[VideoRecord]]:
        groups = group_rows(read_annotations(self.annotation_path), self.annotation_path)
        if not groups:
            return {s: [] for s in SPLITS}
        splits = self._assign_splits(groups)
        for split, other in (("test", "val"), ("val", "test")):
            if not splits[split] and splits[other]:
                rank_zero_info(f"{type(self).__name__}: no {split!r} rows in {self.annotations}; {split} = {other}")
                splits[split] = splits[other]
        return {s: [self._record(groups[v]) for v in videos] for s, videos in splits.items()}

    def load_records(self, split: Split) -> list[VideoRecord]:
        if self._splits is None:
            self._splits = self._load_all()
        return self._splits[split]
