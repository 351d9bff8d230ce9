"""Training pairs whose video cannot be decoded: replaced by a pair of another video, each bad file decoded
and reported once per process, never an empty clip in a batch, never an endless search."""
from __future__ import annotations

import collections
import csv
import warnings
from pathlib import Path

import pytest
from helpers_media import write_video

from datamodules.folder import FolderDataModule
from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.dataset import TrainPairs
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import VideoDecodeError

GOOD_VIDEOS, GOOD_CAPTIONS, BROKEN_CAPTIONS = 6, 5, 60
BROKEN = "broken.mp4"


def write_tree(root: Path) -> Path:
    """A folder-format tree: 6 good training videos with 5 captions each, then one broken file (garbage
    bytes named .mp4) with 60 captions, then 2 more good ones; one good val video."""
    rows = []
    for i in range(GOOD_VIDEOS + 1):
        name = f"good{i}.mp4"
        write_video(root / name, num_frames=8, width=32, height=32, rate=8, seed=i)
        if i == GOOD_VIDEOS:
            rows.append((name, "a held out clip", "val"))
            continue
        if i == GOOD_VIDEOS - 2:
            rows += [(BROKEN, f"the broken clip take {k}", "train") for k in range(BROKEN_CAPTIONS)]
        rows += [(name, f"clip {i} take {k}", "train") for k in range(GOOD_CAPTIONS)]
    (root / BROKEN).write_bytes(b"this is not a video at all\n" * 64)
    with open(root / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("video", "caption", "split"), *rows])
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("broken_tree"))


def folder_dm(root: Path, tmp_path: Path, num_workers: int, **kwargs) -> FolderDataModule:
    dm = FolderDataModule(root=str(root), max_frames=2, image_size=32, batch_size=5, eval_batch_size=4,
                          num_workers=num_workers, tokenizer_dir=str(tmp_path / "tok"), tokenizer_vocab_size=600,
                          frame_cache=False, **kwargs)
    dm.setup("fit")
    return dm


def one_epoch(dm: FolderDataModule) -> list[dict]:
    """Every training item of one epoch, unbatched to ``{video_index, index, video_ok, frames_kept}``."""
    items = []
    for batch in dm.train_dataloader():
        for row in range(len(batch["video_ok"])):
            items.append({"video_index": int(batch["video_index"][row]), "index": int(batch["index"][row]),
                          "video_ok": bool(batch["video_ok"][row]),
                          "frames_kept": int(batch["frame_mask"][row].sum())})
    return items


def bad_log_lines(dm: FolderDataModule) -> list[str]:
    return [line for line in dm.bad_video_log.path.read_text().splitlines() if BROKEN in line]


def check_epoch(dm: FolderDataModule, items: list[dict]) -> None:
    records = dm.records["train"]
    broken = [i for i, r in enumerate(records) if r.video_id == BROKEN]
    assert len(broken) == 1 and len(records[broken[0]].captions) == BROKEN_CAPTIONS
    total_pairs = GOOD_VIDEOS * GOOD_CAPTIONS + BROKEN_CAPTIONS
    assert len(items) == total_pairs  # 90 pairs, batch_size 5: nothing dropped
    assert all(item["video_ok"] for item in items)
    assert all(item["frames_kept"] > 0 for item in items)  # no empty clip
    assert broken[0] not in {item["video_index"] for item in items}
    # 60 replacements over 30 good pairs: each good pair is drawn about 3 times, not one pair 30 times
    uses = collections.Counter(item["index"] for item in items)
    assert max(uses.values()) <= 5, uses.most_common(3)


def test_broken_video_with_60_captions_no_empty_clip_one_warning(tree, tmp_path):
    dm = folder_dm(tree, tmp_path, num_workers=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = one_epoch(dm)
        items_again = one_epoch(dm)  # the known-bad video is not decoded again
    check_epoch(dm, items)
    check_epoch(dm, items_again)
    about_broken = [w for w in caught if BROKEN in str(w.message)]
    assert len(about_broken) == 1, [str(w.message) for w in about_broken]
    assert len(bad_log_lines(dm)) == 1


def test_broken_video_with_60_captions_two_workers(tree, tmp_path):
    dm = folder_dm(tree, tmp_path, num_workers=2)
    items = one_epoch(dm)
    check_epoch(dm, items)
    assert 1 <= len(bad_log_lines(dm)) <= 2  # at most once per worker
    assert BROKEN in dm.bad_video_log.write_report(tmp_path / "bad_videos.tsv")  # the end-of-run report lists it


def test_every_video_broken_is_a_clear_error_not_a_loop(tmp_path):
    paths = [tmp_path / f"bad{i}.mp4" for i in range(3)]
    for path in paths:
        path.write_bytes(b"garbage")
    records = [VideoRecord(p.name, p, [f"caption {k}" for k in range(40)]) for p in paths]
    pairs = TrainPairs(records, tokenizer=None, clip_loader=ClipLoader(2, 32), max_words=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match=r"none of the 3 training videos could be decoded") as error:
            pairs[41]
    assert str(paths[0]) in str(error.value)
    assert len(caught) == 3  # each file tried once


def test_strict_raises_at_the_broken_training_video(tree, tmp_path):
    dm = folder_dm(tree, tmp_path, num_workers=0, strict=True)
    first_broken_pair = (GOOD_VIDEOS - 2) * GOOD_CAPTIONS  # good0..good3 come first
    with pytest.raises(VideoDecodeError, match=BROKEN):
        dm._datasets["train"][first_broken_pair]
