"""What a dataset plugin produces: one record per video, with its captions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class VideoRecord:
    """One video and its captions.

    Args:
        video_id: the dataset's id of the video (unique within a split).
        path: the video file.
        captions: the captions of this video (training: one pair each; evaluation: one query each).
        start: first second to decode, or None for the start of the file.
        end: last second to decode, or None for the end of the file.
    """

    video_id: str
    path: Path
    captions: list[str] = field(default_factory=list)
    start: float | None = None
    end: float | None = None


def caption_pairs(records: list[VideoRecord]) -> list[tuple[int, str]]:
    """``(video_index, caption)`` for every caption of every record, in record order."""
    return [(v, caption) for v, record in enumerate(records) for caption in record.captions]


def _examples(items: list[str], limit: int = 5) -> str:
    """``'a', 'b', 'c'`` plus ``and N more`` beyond ``limit``."""
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def find_record_problems(records: list[VideoRecord], check_files: bool = True) -> list[str]:
    """Human-readable problems of one split: empty split, missing video files, duplicate ids,
    videos without captions, empty captions. An empty list means the split is usable."""
    if not records:
        return ["the split is empty (no videos)"]
    problems = []
    missing = [r for r in records if check_files and not Path(r.path).is_file()]
    if missing:
        problems.append(
            f"{len(missing)} of {len(records)} videos named in the annotations are missing on disk: "
            f"{_examples([r.video_id for r in missing])} (e.g. expected {missing[0].path})")
    seen, duplicates = set(), []
    for record in records:
        if record.video_id in seen:
            duplicates.append(record.video_id)
        seen.add(record.video_id)
    if duplicates:
        problems.append(f"{len(duplicates)} duplicate video ids: {_examples(duplicates)}")
    no_captions = [r.video_id for r in records if not r.captions]
    if no_captions:
        problems.append(f"{len(no_captions)} videos have no caption: {_examples(no_captions)}")
    empty = [f"{r.video_id}#{i}" for r in records for i, c in enumerate(r.captions) if not str(c).strip()]
    if empty:
        problems.append(f"{len(empty)} empty captions (video#caption number): {_examples(empty)}")
    return problems
