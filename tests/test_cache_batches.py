"""Batched reads (``TrainPairs.__getitems__`` / ``EvalVideos.__getitems__``) and ``collate``: the same items as
``dataset[i]`` one by one, each video read once per batch, and a batch buffer handed on without a copy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_media import write_video
from torch.utils.data import DataLoader, default_collate

from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.dataset import EvalVideos, TrainPairs, collate
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.tokenizer import train_bpe_tokenizer


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[VideoRecord]:
    root = tmp_path_factory.mktemp("videos")
    return [VideoRecord(f"v{i}", write_video(root / f"v{i}.mp4", num_frames=16, width=48, height=40, rate=8, seed=i),
                        [f"clip {i} take {k}" for k in range(3)]) for i in range(4)]


@pytest.fixture(scope="module")
def tokenizer(records, tmp_path_factory):
    return train_bpe_tokenizer([c for r in records for c in r.captions], tmp_path_factory.mktemp("tok"), 600)


def pairs(records, tokenizer, cache_dir) -> TrainPairs:
    return TrainPairs(records, tokenizer, ClipLoader(3, 32, cache_dir=cache_dir), max_words=8)


def assert_same_items(batched: list[dict], single: list[dict]) -> None:
    assert len(batched) == len(single)
    for one, other in zip(batched, single):
        assert one.keys() == other.keys()
        for key in one:
            value, expected = one[key], other[key]
            assert (torch.equal(value, expected) if isinstance(value, torch.Tensor) else value == expected), key


@pytest.mark.parametrize("cached", [False, True])
def test_getitems_equals_one_by_one_and_reads_a_repeated_video_once(records, tokenizer, tmp_path, cached,
                                                                     monkeypatch):
    dataset = pairs(records, tokenizer, tmp_path / "cache")
    indices = [4, 0, 5, 11, 3, 4]  # pairs 3, 4, 5 are video 1's captions; 4 twice
    single = [dataset[i] for i in indices]  # fills the cache
    if not cached:
        dataset = pairs(records, tokenizer, tmp_path / "other-cache")
    calls: list[str] = []
    original = ClipLoader.load_into
    monkeypatch.setattr(ClipLoader, "load_into", lambda self, record, out: calls.append(record.video_id)
                        or original(self, record, out))
    batched = dataset.__getitems__(indices)
    assert_same_items(batched, single)
    assert sorted(calls) == ["v0", "v1", "v3"]  # video 1's three pairs (four slots): one read
    assert [item["video_index"] for item in batched] == [1, 0, 1, 3, 1, 1]


def test_collate_hands_on_the_batch_buffer_and_equals_default_collate(records, tokenizer, tmp_path):
    dataset = pairs(records, tokenizer, tmp_path)
    items = dataset.__getitems__([0, 7, 9])
    batch = collate(items)
    expected = default_collate([dataset[i] for i in (0, 7, 9)])
    assert batch.keys() == expected.keys()
    assert all(torch.equal(batch[k], expected[k]) for k in batch)
    assert batch["frames"].data_ptr() == items[0]["frames"].data_ptr()  # no copy
    assert batch["frames"].shape == (3, 3, 32, 32, 3)


def test_collate_copies_frames_that_are_not_one_whole_buffer(records, tokenizer, tmp_path):
    dataset = pairs(records, tokenizer, tmp_path)
    items = dataset.__getitems__([0, 1, 2])
    reordered = [items[1], items[0], items[2]]  # views of one buffer, but not in its order
    batch = collate(reordered)
    assert batch["frames"].data_ptr() != items[0]["frames"].data_ptr()
    assert torch.equal(batch["frames"], torch.stack([item["frames"] for item in reordered]))
    part = collate(items[:2])  # two views of a three-clip buffer: copied, never the whole buffer
    assert part["frames"].shape[0] == 2 and torch.equal(part["frames"], torch.stack([i["frames"] for i in items[:2]]))


def test_a_worker_loader_gives_the_main_process_the_same_batches(records, tokenizer, tmp_path):
    dataset = pairs(records, tokenizer, tmp_path)
    expected = [default_collate([dataset[i] for i in range(k, k + 4)]) for k in range(0, 12, 4)]
    loader = DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate)
    for batch, want in zip(loader, expected, strict=True):
        assert all(torch.equal(batch[k], want[k]) for k in want)


def test_eval_videos_getitems_with_a_bad_video(records, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    videos = EvalVideos([*records[:2], VideoRecord("bad", bad, ["x"])], ClipLoader(3, 32, cache_dir=tmp_path))
    with pytest.warns(RuntimeWarning, match="video 'bad'"):
        batched = videos.__getitems__([2, 0, 1])
    assert [item["video_ok"] for item in batched] == [False, True, True]
    assert not batched[0]["frames"].any() and not batched[0]["frame_mask"].any()
    for item in batched[1:]:
        single = videos[item["video_index"]]
        assert torch.equal(item["frames"], single["frames"]) and torch.equal(item["frame_mask"], single["frame_mask"])
    assert np.array_equal(collate(batched)["video_index"].numpy(), [2, 0, 1])
