"""The synthetic clips of :mod:`xclip_pl.data.synthetic`, written in the on-disk format of each dataset.

``write_synthetic(root, format, num_train, num_val, num_test)`` renders the same kind of clips (two
coloured shapes moving, captions naming both) and writes real-format annotation files and videos:

    msrvtt       the MSR-VTT layout of :func:`~xclip_pl.data.synthetic.write_synthetic_msrvtt` (val = test)
    msvd         {train,val,test}_list.txt, raw-captions.pkl (token lists), YouTubeClips/<id>.avi (MPEG-4)
    lsmdc        LSMDC16_annos_training.csv, LSMDC16_annos_val.csv, LSMDC16_challenge_1000_publictect.csv
                 (6 tab-separated fields, one sentence per clip), videos/<movie>/<clip_id>.mp4
    didemo       {train,val,test}_list.txt, {train,val,test}_data.json (several descriptions per video, with
                 ``times``), ids with an original extension (``...@N00_..._<hex>.mov``); files
                 videos/<id>.mp4 (even clips) or videos/<id without extension>.mp4 (odd clips)
    activitynet  train_ids.json, val_ids.json, train.json, val_1.json (``duration``, ``timestamps``,
                 ``sentences``); files videos/v_<id>.mp4 (even clips) or videos/<id>.mp4 (odd clips)
    folder       captions.csv (video, caption, split, start, end; several rows per video) and videos/<split>/

Where a format has no separate val split (msrvtt, activitynet: val = test) the shared split has
``num_test`` videos and ``num_val`` is ignored. LSMDC gets one sentence per clip (the first caption).
``root/.complete`` (the arguments as JSON) is written last.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from tqdm.auto import tqdm

from xclip_pl.data.synthetic import (
    MARKER_NAME,
    _check_sizes,
    ensure_synthetic_msrvtt,
    make_captions,
    render_clip,
    scene_kinds,
    write_mp4,
    write_synthetic_msrvtt,
)

Format = Literal["msrvtt", "msvd", "lsmdc", "didemo", "activitynet", "folder"]
FORMATS: tuple[str, ...] = ("msrvtt", "msvd", "lsmdc", "didemo", "activitynet", "folder")
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Clip:
    """One written clip: its split, running index, dataset id, file (relative to root) and captions."""

    split: str
    index: int
    video_id: str
    file: str
    captions: list[str]


def _hex(seed: int, index: int, length: int) -> str:
    """A stable pseudo-random hex string per (seed, clip) for ids that look like the real ones."""
    return hashlib.sha1(f"{seed}-{index}".encode()).hexdigest()[:length]


def _sentence(caption: str) -> str:
    """Capitalised with a full stop, like the human-written sentences of LSMDC / ActivityNet."""
    return caption[:1].upper() + caption[1:] + "."


def _stamp(seconds: float) -> str:
    """``hh.mm.ss.mmm`` as in LSMDC clip ids and time fields."""
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}.{ms // 60_000 % 60:02d}.{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _lsmdc_clip(split: str, index: int, seconds: float) -> tuple[str, str]:
    movie = f"{1001 + SPLITS.index(split)}_Synthetic_Movie_{split.capitalize()}"
    start = 60.0 + 10.0 * index
    clip_id = f"{movie}_{_stamp(start)}-{_stamp(start + seconds)}"
    return clip_id, f"videos/{movie}/{clip_id}.mp4"


def _didemo_clip(seed: int, index: int) -> tuple[str, str]:
    extension = ("mov", "mp4", "avi", "m4v")[index % 4]
    stem = f"{10_000_000 + index}@N00_{2_600_000_000 + index}_{_hex(seed, index, 10)}"
    video_id = f"{stem}.{extension}"
    return video_id, f"videos/{video_id if index % 2 == 0 else stem}.mp4"


def _activitynet_clip(seed: int, index: int) -> tuple[str, str]:
    youtube_id = _hex(seed, index, 11)
    return f"v_{youtube_id}", f"videos/{'v_' if index % 2 == 0 else ''}{youtube_id}.mp4"


def clip_names(format: str, split: str, index: int, seed: int, seconds: float) -> tuple[str, str]:
    """``(video_id, file relative to root)`` of clip ``index`` in the dataset's naming."""
    if format == "msvd":
        video_id = f"syn{_hex(seed, index, 8)}_{index % 30}_{index % 30 + int(round(seconds))}"
        return video_id, f"YouTubeClips/{video_id}.avi"
    if format == "lsmdc":
        return _lsmdc_clip(split, index, seconds)
    if format == "didemo":
        return _didemo_clip(seed, index)
    if format == "activitynet":
        return _activitynet_clip(seed, index)
    file = f"videos/{split}/clip{index:04d}.mp4"  # folder: the ``video`` column is the path, relative to root
    return file, file


# ---- annotation writers -----------------------------------------------------------------------
def _split(clips: list[Clip], split: str) -> list[Clip]:
    return [c for c in clips if c.split == split]


def _write_lists(root: Path, clips: list[Clip]) -> None:
    for split in SPLITS:
        (root / f"{split}_list.txt").write_text("".join(f"{c.video_id}\n" for c in _split(clips, split)))


def _write_msvd(root: Path, clips: list[Clip], seconds: float) -> None:
    _write_lists(root, clips)
    with open(root / "raw-captions.pkl", "wb") as handle:
        pickle.dump({c.video_id: [caption.split() for caption in c.captions] for c in clips}, handle)


LSMDC_FILES = {"train": "LSMDC16_annos_training.csv", "val": "LSMDC16_annos_val.csv",
               "test": "LSMDC16_challenge_1000_publictect.csv"}


def _write_lsmdc(root: Path, clips: list[Clip], seconds: float) -> None:
    for split, name in LSMDC_FILES.items():
        lines = []
        for c in _split(clips, split):
            start = 60.0 + 10.0 * c.index
            times = [_stamp(start), _stamp(start + seconds), _stamp(start - 0.5), _stamp(start + seconds + 0.5)]
            sentence = _sentence(c.captions[0])
            if c.index % 3 == 0:  # real sentences carry quotes and commas: the format has no quoting
                sentence = f'{sentence[:-1]}, as "SOMEONE" watches.'
            lines.append("\t".join([c.video_id, *times, sentence]) + "\n")
        (root / name).write_text("".join(lines), encoding="utf-8")


def _didemo_entry(clip: Clip, k: int, description: str) -> dict[str, Any]:
    chunk = (clip.index + k) % 6  # 5-second chunks, 0..5
    return {"annotation_id": clip.index * 100 + k, "description": description, "video": clip.video_id,
            "times": [[chunk, chunk], [chunk, min(chunk + 1, 5)], [chunk, chunk], [max(chunk - 1, 0), chunk]],
            "dl_link": f"https://example.invalid/{clip.video_id}"}


def _write_didemo(root: Path, clips: list[Clip], seconds: float) -> None:
    _write_lists(root, clips)
    for split in SPLITS:
        part = _split(clips, split)
        most = max((len(c.captions) for c in part), default=0)
        entries = [_didemo_entry(c, k, c.captions[k]) for k in range(most) for c in part if k < len(c.captions)]
        (root / f"{split}_data.json").write_text(json.dumps(entries))  # videos interleaved, as in the real files


def _activitynet_entry(clip: Clip, seconds: float) -> dict[str, Any]:
    step = seconds / len(clip.captions)
    return {"duration": round(seconds, 2),
            "timestamps": [[round(k * step, 2), round(min((k + 1.5) * step, seconds), 2)]
                           for k in range(len(clip.captions))],
            "sentences": [" " + _sentence(caption) for caption in clip.captions]}  # leading blanks, as real ones


def _write_activitynet(root: Path, clips: list[Clip], seconds: float) -> None:
    files = (("train", "train_ids.json", "train.json"), ("test", "val_ids.json", "val_1.json"))  # val_1 = val = test
    for split, ids_name, json_name in files:
        part = _split(clips, split)
        (root / ids_name).write_text(json.dumps([c.video_id for c in part]))
        (root / json_name).write_text(json.dumps({c.video_id: _activitynet_entry(c, seconds) for c in part}))


def _write_folder(root: Path, clips: list[Clip], seconds: float) -> None:
    with open(root / "captions.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "caption", "split", "start", "end"])
        for c in clips:
            start, end = ("0", f"{seconds - 1:g}") if c.index % 3 == 2 else ("", "")
            writer.writerows([c.video_id, caption, c.split, start, end] for caption in c.captions)


WRITERS: dict[str, Callable[[Path, list[Clip], float], None]] = {
    "msvd": _write_msvd, "lsmdc": _write_lsmdc, "didemo": _write_didemo, "activitynet": _write_activitynet,
    "folder": _write_folder,
}


# ---- generator ----------------------------------------------------------------------------------
def _plan(format: str, num_train: int, num_val: int, num_test: int) -> list[str]:
    """The split of each clip, in index order (val = test formats get no separate val clips)."""
    if min(num_train, num_val, num_test) < 0:
        raise ValueError(f"need num_train, num_val, num_test >= 0, got {num_train}, {num_val}, {num_test}")
    num_val = 0 if format in ("msrvtt", "activitynet") else num_val
    splits = ["train"] * num_train + ["val"] * num_val + ["test"] * num_test
    if not splits:
        raise ValueError("need at least one clip (num_train + num_val + num_test >= 1)")
    return splits


def _render_clips(root: Path, format: str, splits: list[str], seed: int, size: tuple[int, int, float, int],
                  captions_per_video: int, progress: bool) -> list[Clip]:
    """Render and encode every clip under ``root`` in the format's naming; the clips with their captions."""
    width, height, seconds, rate = size
    num_frames = _check_sizes(width, height, seconds, rate)
    kinds, clips = scene_kinds(seed, len(splits)), []
    for index in tqdm(range(len(splits)), desc=f"synthetic {format} -> {root}", disable=not progress, unit="clip"):
        video_id, file = clip_names(format, splits[index], index, seed, seconds)
        frames, scene, rng = render_clip(kinds[index], [seed, index], width, height, num_frames)
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        write_mp4(root / file, frames, rate, codec="mpeg4" if file.endswith(".avi") else "libx264")
        clips.append(Clip(splits[index], index, video_id, file, make_captions(scene, captions_per_video, rng)))
    return clips


def _params(**kwargs: Any) -> dict[str, Any]:
    """Every argument of write_synthetic that changes the data (defaults filled in, no root/progress)."""
    bound = inspect.signature(write_synthetic).bind(root=".", **kwargs)
    bound.apply_defaults()
    params = dict(bound.arguments)
    params.pop("root"), params.pop("progress")
    return {"version": FORMAT_VERSION, **params}


def write_synthetic(root: str | Path, format: Format, num_train: int = 8, num_val: int = 4, num_test: int = 4,
                    seed: int = 0, captions_per_video: int = 4, width: int = 64, height: int = 48,
                    seconds: float = 4.0, rate: int = 8, progress: bool = False) -> Path:
    """Write a synthetic dataset in ``format``'s on-disk layout under ``root`` and return ``root``.

    Deterministic by ``seed``; clip ``i`` (train clips first, then val, then test) is the clip ``i`` of
    :func:`~xclip_pl.data.synthetic.write_synthetic_msrvtt` with the same seed and sizes.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {list(FORMATS)}")
    if captions_per_video < 1:
        raise ValueError(f"need captions_per_video >= 1, got {captions_per_video}")
    root = Path(root)
    if format == "msrvtt":
        return write_synthetic_msrvtt(root, num_train=num_train, num_test=num_test,
                                      captions_per_video=captions_per_video, seed=seed, width=width, height=height,
                                      seconds=seconds, rate=rate, progress=progress)
    splits = _plan(format, num_train, num_val, num_test)  # every argument is checked before anything is written
    _check_sizes(width, height, seconds, rate)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER_NAME).unlink(missing_ok=True)
    clips = _render_clips(root, format, splits, seed, (width, height, seconds, rate), captions_per_video, progress)
    WRITERS[format](root, clips, seconds)
    params = _params(format=format, num_train=num_train, num_val=num_val, num_test=num_test, seed=seed,
                     captions_per_video=captions_per_video, width=width, height=height, seconds=seconds, rate=rate)
    (root / MARKER_NAME).write_text(json.dumps(params, sort_keys=True))
    return root


def ensure_synthetic(root: str | Path, format: Format, **kwargs: Any) -> Path:
    """Generate once: do nothing if ``root/.complete`` records the same arguments, else (re)write."""
    root = Path(root)
    if format == "msrvtt":
        kwargs.pop("num_val", None)
        return ensure_synthetic_msrvtt(root, **kwargs)
    wanted = json.loads(json.dumps(_params(format=format, **kwargs), sort_keys=True))
    try:
        recorded = json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        recorded = None
    return root if recorded == wanted else write_synthetic(root, format, **kwargs)
