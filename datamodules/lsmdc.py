"""LSMDC (LSMDC 2016 challenge files) in the layout the X-CLIP / CLIP4Clip scripts use.

    root/LSMDC16_annos_training.csv              train (about 101k clips)
    root/LSMDC16_annos_val.csv                   val (7408 clips)
    root/LSMDC16_challenge_1000_publictect.csv   test (1000 clips; "publictect" is the real file name)
    root/videos/**/<clip_id>.<ext>               each clip its own file, found recursively by stem

Each annotation line has exactly 6 tab-separated fields and no quoting: ``clip_id``, ``start_aligned``,
``end_aligned``, ``start_extracted``, ``end_extracted``, ``sentence``. Only the clip id and the sentence
are used (each clip is its own file, so the times are not needed).
"""
from __future__ import annotations

from pathlib import Path

from xclip_pl.data.datamodule import Split, VideoTextDataModule
from xclip_pl.data.files import read_text
from xclip_pl.data.records import VideoRecord

FIELDS = ("clip_id", "start_aligned", "end_aligned", "start_extracted", "end_extracted", "sentence")


def _parse_line(path: Path, number: int, line: str) -> tuple[str, str]:
    """``(clip_id, sentence)`` of one annotation line; a ValueError naming file and line otherwise."""
    fields = line.split("\t")
    if len(fields) != len(FIELDS):
        raise ValueError(f"{path}, line {number}: expected {len(FIELDS)} tab-separated fields ({', '.join(FIELDS)}), "
                         f"found {len(fields)}: {line[:120]!r}. Fix the line (fields are separated by tabs only)")
    clip_id, sentence = fields[0].strip(), fields[-1].strip()
    if not clip_id or not sentence:
        what = "clip id" if not clip_id else "sentence"
        raise ValueError(f"{path}, line {number}: empty {what}: {line[:120]!r}. Fix or remove the line")
    return clip_id, sentence


def read_lsmdc_annotations(path: Path) -> list[tuple[str, str]]:
    """``(clip_id, sentence)`` per non-empty line, in file order (sentences may contain quotes and commas)."""
    pairs = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        line = line.rstrip("\r")
        if line.strip():
            pairs.append(_parse_line(path, number, line))
    return pairs


def unique_ids(ids: list[str]) -> list[str]:
    """The ids with repeats made unique: the 2nd occurrence of ``x`` becomes ``x#2``, the 3rd ``x#3``..."""
    seen: dict[str, int] = {}
    out = []
    for clip_id in ids:
        seen[clip_id] = seen.get(clip_id, 0) + 1
        out.append(clip_id if seen[clip_id] == 1 else f"{clip_id}#{seen[clip_id]}")
    return out


class LSMDCDataModule(VideoTextDataModule):
    """LSMDC: one record per annotation line, 1:1 evaluation (one sentence per clip) in every split.

    A clip id that appears on several lines of one file gives several records (one per line, as the
    reference's 1:1 evaluation); the repeats are named ``<clip_id>#2``, ``<clip_id>#3``... and read the
    same file.

    Args:
        root: the LSMDC directory (annotation files and ``video_dir``).
        train_csv: training annotations (tab-separated, 6 fields) under ``root``.
        val_csv: validation annotations under ``root``.
        test_csv: test annotations under ``root`` (the public 1000-clip challenge test set).
        video_dir: directory searched recursively for ``<clip_id>.<any extension>``, relative to ``root``.
        **kwargs: the dataset-independent arguments of :class:`VideoTextDataModule` (``missing_videos`` among
            them: ``skip`` drops the lines of missing clips, as the reference does silently).
    """

    def __init__(self, root: str, train_csv: str = "LSMDC16_annos_training.csv", val_csv: str = "LSMDC16_annos_val.csv",
                 test_csv: str = "LSMDC16_challenge_1000_publictect.csv", video_dir: str = "videos",
                 **kwargs) -> None:
        super().__init__(root=root, **kwargs)
        self.annotations = {"train": train_csv, "val": val_csv, "test": test_csv}
        self.video_dir = video_dir

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        return [(f"{split} annotations ({split}_csv)", self.root / self.annotations[split]),
                ("video directory (video_dir)", self.root / self.video_dir)]

    def load_records(self, split: Split) -> list[VideoRecord]:
        """One record per line; each file is the one under ``video_dir`` whose stem is the clip id
        (``<video_dir>/<id>.avi`` if there is none)."""
        pairs = read_lsmdc_annotations(self.root / self.annotations[split])
        ids = unique_ids([clip_id for clip_id, _ in pairs])
        return [VideoRecord(key, Path(f"{clip_id}.avi"), [sentence], search=(f"{clip_id}.*",))
                for key, (clip_id, sentence) in zip(ids, pairs)]
