"""MSVD in the layout the X-CLIP / CLIP4Clip scripts use.

    root/train_list.txt, val_list.txt, test_list.txt   one video id per line (1200 / 100 / 670 videos)
    root/raw-captions.pkl     pickled dict video_id -> list of captions, each a list of tokens
    root/YouTubeClips/**/<video_id>.<ext>   found recursively by file stem (``.avi`` in the original release)

Train: every caption of every training video (about 48.8k pairs). Val and test keep every caption of a
video in its record: each caption is a query and each video is encoded once (multi-sentence evaluation).
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import read_id_list
from xclip_pl.data.records import VideoRecord


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
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule` (``missing_videos`` among them).
    """

    def __init__(self, root: str, train_list: str = "train_list.txt", val_list: str = "val_list.txt",
                 test_list: str = "test_list.txt", caption_file: str = "raw-captions.pkl",
                 video_dir: str = "YouTubeClips", **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.lists = {"train": train_list, "val": val_list, "test": test_list}
        self.caption_file, self.video_dir = caption_file, video_dir

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        return [(f"{split} list ({split}_list)", self.root / self.lists[split]),
                ("caption file (caption_file)", self.root / self.caption_file),
                ("video directory (video_dir)", self.root / self.video_dir)]

    def load_records(self, split: Split) -> list[VideoRecord]:
        """The listed videos with their captions; each file is the one under ``video_dir`` whose stem is the id
        (``<video_dir>/<id>.avi`` if there is none)."""
        ids = read_id_list(self.root / self.lists[split])
        captions = read_msvd_captions(self.root / self.caption_file)
        return [VideoRecord(v, Path(f"{v}.avi"), list(captions.get(v, [])), search=(f"{v}.*",)) for v in ids]
