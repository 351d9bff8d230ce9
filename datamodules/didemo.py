"""DiDeMo (LisaAnne/LocalizingMoments annotations) in the layout the X-CLIP / CLIP4Clip scripts use.

    root/{train,val,test}_list.txt    video ids, one per line
    root/{train,val,test}_data.json   list of {"description", "times", "video", ...}, several per video
    root/videos/**/<video>.mp4        found recursively (see :func:`video_names`)

Paragraph retrieval: all descriptions of a video, in JSON order, joined with a space into ONE caption;
the per-moment ``times`` are not used. A listed video without descriptions is left out (the reference uses
list ∩ JSON ∩ files on disk). Each video is decoded over ``[0, window_end]`` seconds (the
reference: 0..31 s, so at most 32 frames at 1 fps). Evaluation is 1:1, paragraph <-> video.
"""
from __future__ import annotations

from pathlib import Path

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import load_json, read_id_list
from xclip_pl.data.records import VideoRecord


def read_didemo_paragraphs(path: Path) -> dict[str, str]:
    """``video -> paragraph``: the video's descriptions (stripped) joined with a space, in JSON order."""
    data = load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {{'description', 'times', 'video'}} objects")
    descriptions: dict[str, list[str]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "video" not in entry or "description" not in entry:
            raise ValueError(f"{path}: entry [{i}] lacks 'video' or 'description': {str(entry)[:200]}. "
                             "Fix the entry (DiDeMo *_data.json format)")
        text = str(entry["description"]).strip()
        descriptions.setdefault(str(entry["video"]), []).extend([text] if text else [])
    return {video: " ".join(texts) for video, texts in descriptions.items()}


def strip_extension(video_id: str) -> str:
    """The id without its last extension (``a@N00_1_f.mov`` -> ``a@N00_1_f``); unchanged if it has none."""
    return Path(video_id).stem if Path(video_id).suffix else video_id


def video_names(video_id: str) -> tuple[str, ...]:
    """The file names a video is looked up by, in order: ``<id>.mp4``, ``<id without its extension>.mp4``,
    then any file whose stem is the id or the id without its extension."""
    stems = (video_id, strip_extension(video_id))
    return (*(f"{stem}.mp4" for stem in stems), *(f"{stem}.*" for stem in stems))


class DiDeMoDataModule(VideoTextDataModule):
    """DiDeMo: one paragraph (all descriptions joined) per video, decoded over the first ``window_end`` s.

    The ids of a split are those of its list (list order); the base class leaves out those without
    descriptions in its JSON, as the reference does.

    Args:
        root: the DiDeMo directory (list files, JSON files and ``video_dir``).
        train_list: training video ids, one per line, under ``root``.
        val_list: validation video ids under ``root``.
        test_list: test video ids under ``root``.
        train_json: training annotations (list of ``description`` / ``times`` / ``video`` objects) under ``root``.
        val_json: validation annotations under ``root``.
        test_json: test annotations under ``root``.
        video_dir: directory searched recursively for the videos, relative to ``root``.
        window_end: last second decoded, from 0 (reference: 31.0); None decodes the whole video.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule` (reference for
            paragraphs: ``max_words=64``, ``max_frames=64``; ``missing_videos: skip`` keeps only the videos
            found on disk, as the reference does).
    """

    def __init__(self, root: str, train_list: str = "train_list.txt", val_list: str = "val_list.txt",
                 test_list: str = "test_list.txt", train_json: str = "train_data.json", val_json: str = "val_data.json",
                 test_json: str = "test_data.json", video_dir: str = "videos", window_end: float | None = 31.0,
                 **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.jsons = {"train": train_json, "val": val_json, "test": test_json}
        self.video_dir, self.window_end = video_dir, window_end

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        return [(f"{split} list ({split}_list)", self.root / self.lists[split]),
                (f"{split} annotations ({split}_json)", self.root / self.jsons[split]),
                ("video directory (video_dir)", self.root / self.video_dir)]

    def load_records(self, split: Split) -> list[VideoRecord]:
        """One paragraph record per listed video, looked up by :func:`video_names` under ``video_dir``
        (``<video_dir>/<id>.mp4`` if none is found)."""
        ids = read_id_list(self.root / self.lists[split])
        paragraphs = read_didemo_paragraphs(self.root / self.jsons[split])
        start, end = (None, None) if self.window_end is None else (0.0, float(self.window_end))
        return [VideoRecord(v, Path(f"{v}.mp4"), [paragraphs[v]] if paragraphs.get(v) else [], start, end,
                            search=video_names(v)) for v in ids]
