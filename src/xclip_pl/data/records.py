"""What a dataset plugin produces (one record per video, with its captions), and the dataset-independent
rules the base datamodule applies to them: leave out videos without captions, drop or report missing files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pytorch_lightning.utilities import rank_zero_warn

MissingVideos = Literal["error", "skip"]


@dataclass
class VideoRecord:
    """One video and its captions.

    Args:
        video_id: the dataset's id of the video (unique within a split).
        path: the video file. A plugin gives it relative to its video directory (or absolute); the base
            datamodule resolves it. With ``search``, the file expected when none of those names is found.
        captions: the captions of this video (training: one pair each; evaluation: one query each).
        start: first second to decode, or None for the start of the file.
        end: last second to decode, or None for the end of the file.
        search: file names looked up in the video directory, in order, before ``path``: ``"<stem>.<ext>"`` or
            ``"<stem>.*"`` (any suffix); see :class:`~xclip_pl.data.files.VideoIndex`. Empty: ``path`` as given.
        origin: where the annotations list the video, for messages (``"<file>, line <n>"``); empty if unknown.
        caption_origins: where each caption is written (``"<file>, line <n>"`` or ``"<file>, sentences[<i>]"``),
            one per caption, for messages; empty if unknown.
    """

    video_id: str
    path: Path
    captions: list[str] = field(default_factory=list)
    start: float | None = None
    end: float | None = None
    search: tuple[str, ...] = ()
    origin: str = ""
    caption_origins: tuple[str, ...] = ()


def caption_pairs(records: list[VideoRecord]) -> list[tuple[int, str]]:
    """``(video_index, caption)`` for every caption of every record, in record order."""
    return [(v, caption) for v, record in enumerate(records) for caption in record.captions]


def examples(items: list[str], limit: int = 5) -> str:
    """``'a', 'b', 'c'`` plus ``and N more`` beyond ``limit``."""
    shown = ", ".join(repr(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def drop_videos_without_captions(records: list[VideoRecord], where: str) -> list[VideoRecord]:
    """The records that have at least one caption; one warning naming how many and which were left out
    (the reference keeps the videos of the list that have captions: list ∩ captions)."""
    kept = [r for r in records if r.captions]
    if len(kept) < len(records):
        left_out = [r.video_id for r in records if not r.captions]
        rank_zero_warn(f"{where}: {len(left_out)} of {len(records)} videos have no caption in the annotations and "
                       f"are left out: {examples(left_out)}")
    return kept


def drop_missing_videos(records: list[VideoRecord], mode: MissingVideos, where: str) -> list[VideoRecord]:
    """``records`` unchanged (``mode="error"``: :func:`find_record_problems` reports missing files), or without
    the records whose file is missing, with one warning naming how many and which (``mode="skip"``)."""
    if mode == "error":
        return records
    kept = [r for r in records if Path(r.path).is_file()]
    missing = [r.video_id for r in records if not Path(r.path).is_file()]
    if missing:
        rank_zero_warn(f"{where}: skipping {len(missing)} of {len(records)} records whose video is missing "
                       f"(missing_videos='skip'): {examples(missing)}")
    return kept


def merge_origins(origins: list[str]) -> str:
    """``"a.csv, lines 4 and 7"`` for ``["a.csv, line 4", "a.csv, line 7"]``; other origins joined with ``;``."""
    by_file: dict[str, list[str]] = {}
    for origin in origins:
        file, sep, line = origin.rpartition(", line ")
        if sep and line.isdigit():
            by_file.setdefault(file, []).append(line)
        else:
            by_file.setdefault(origin, [])
    parts = []
    for file, lines in by_file.items():
        if len(lines) == 1:
            parts.append(f"{file}, line {lines[0]}")
        elif lines:
            parts.append(f"{file}, lines {', '.join(lines[:-1])} and {lines[-1]}")
        else:
            parts.append(file)
    return "; ".join(parts)


def find_record_problems(records: list[VideoRecord], check_files: bool = True) -> list[str]:
    """Human-readable problems of one split: empty split, missing video files, duplicate ids, empty
    captions; where the records say where they come from (``origin``, ``caption_origins``) the problem names
    the file and line. An empty list means the split is usable."""
    if not records:
        return ["the split is empty (no videos)"]
    problems = []
    missing = [r for r in records if check_files and not Path(r.path).is_file()]
    if missing:
        problems.append(
            f"{len(missing)} of {len(records)} videos named in the annotations are missing on disk: "
            f"{examples([r.video_id for r in missing])} (e.g. expected {missing[0].path})")
    by_id: dict[str, list[VideoRecord]] = {}
    for record in records:
        by_id.setdefault(record.video_id, []).append(record)
    duplicates = {video_id: group for video_id, group in by_id.items() if len(group) > 1}
    if duplicates:
        named = [f"{video_id!r} ({merge_origins([r.origin for r in group])})" if all(r.origin for r in group)
                 else repr(video_id) for video_id, group in duplicates.items()]
        shown = "; ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        problems.append(f"{len(duplicates)} video id(s) listed more than once: {shown}. Keep one line per video")
    empty = [(r, i) for r in records for i, c in enumerate(r.captions) if not str(c).strip()]
    if empty:
        named = [f"{r.caption_origins[i]} (video {r.video_id!r})" if i < len(r.caption_origins)
                 else f"video {r.video_id!r}, caption {i}" for r, i in empty]
        shown = "; ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        problems.append(f"{len(empty)} empty caption(s): {shown}. Write the caption or remove the entry")
    return problems


def missing_videos_hint(missing: dict[str, int]) -> str:
    """The ways out for ``missing`` (split -> video files not on disk): add them, or keep only the videos on
    disk, as the reference does (``missing_videos: skip``). Empty if nothing is missing."""
    if not missing:
        return ""
    total = sum(missing.values())
    counts = ", ".join(f"{split}: {count}" for split, count in missing.items())
    return (f"\n{total} video{'s are' if total != 1 else ' is'} missing ({counts}): add the file(s) or remove them "
            "from the annotations. To keep only the videos on disk, as the reference does, set "
            "`data.init_args.missing_videos: skip` in the config (command line: --data.init_args.missing_videos skip).")


def problem_report(owner: str, problems: list[tuple[str, str]], missing_files: dict[str, int], help_class: str) -> str:
    """One message for all ``(split, problem)`` pairs of ``owner`` (identical problems of several splits merged),
    with :func:`missing_videos_hint` for the splits of ``missing_files`` (split -> files not on disk) and where
    to read about the arguments (``xclip-pl fit --data.help <help_class>``)."""
    merged: dict[str, list[str]] = {}
    for split, problem in problems:
        merged.setdefault(problem, []).append(split)
    lines = [f"  - [{', '.join(splits)}] {problem}" for problem, splits in merged.items()]
    missing = {split: missing_files.get(split, 0) for split in dict.fromkeys(s for s, _ in problems)}
    return (f"{owner}: {len(lines)} problem(s) with the dataset:\n" + "\n".join(lines)
            + missing_videos_hint({split: n for split, n in missing.items() if n})
            + f"\nFix the files or the datamodule arguments (see `xclip-pl fit --data.help {help_class}`).")
