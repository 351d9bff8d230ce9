"""Evaluation bookkeeping (src/xclip_pl/evaluate/evaluation.py): EvalBuffer's de-duplicated, index-ordered
gathering of what a DistributedSampler hands each rank, the first-occurrence helper, and the metric table."""
import pytest
import torch
from torch.utils.data import DistributedSampler

from xclip_pl.evaluate.evaluation import (
    EvalBuffer,
    _first_occurrence,
    format_metric_table,
)
from xclip_pl.model.features import TextFeatures, VideoFeatures

DIM, WORDS, FRAMES = 4, 5, 3


def video_features(index: torch.Tensor) -> VideoFeatures:
    """Features that encode their own index (and differ per field), so any reordering is visible."""
    i = index.float()
    return VideoFeatures(i[:, None].expand(-1, DIM) + 0.5, i[:, None, None].expand(-1, FRAMES, DIM) * 10,
                         (torch.arange(FRAMES)[None, :] <= index[:, None] % FRAMES))


def text_features(index: torch.Tensor) -> TextFeatures:
    i = index.float()
    return TextFeatures(-i[:, None].expand(-1, DIM), i[:, None, None].expand(-1, WORDS, DIM) * 100,
                        (torch.arange(WORDS)[None, :] <= index[:, None] % WORDS))


def sampler_indices(n: int, world: int, shuffle: bool) -> list[list[int]]:
    """What each rank of a DistributedSampler sees (padded with repeats to a multiple of world)."""
    return [list(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=shuffle, seed=3)) for r in range(world)]


def fill(buffer: EvalBuffer, video_idx: list[int], text_idx: list[int], caption_video: dict[int, int],
         bad: set[int], batch: int = 2) -> None:
    for s in range(0, len(video_idx), batch):
        idx = torch.tensor(video_idx[s : s + batch])
        buffer.add_videos(video_features(idx), idx, torch.tensor([int(v not in bad) for v in idx.tolist()]))
    for s in range(0, len(text_idx), batch):
        idx = torch.tensor(text_idx[s : s + batch])
        buffer.add_texts(text_features(idx), idx, torch.tensor([caption_video[c] for c in idx.tolist()]))


def identity(t: torch.Tensor) -> torch.Tensor:
    return t


# ---------------------------------------------------------------------------------------------- _first_occurrence


def first_occurrence_loop(index: list[int]) -> tuple[list[int], list[int]]:
    first: dict[int, int] = {}
    for pos, value in enumerate(index):
        first.setdefault(value, pos)
    values = sorted(first)
    return [first[v] for v in values], values


@pytest.mark.parametrize("index", [
    [0, 1, 2, 3],
    [3, 1, 2, 0],
    [0, 2, 4, 1, 3, 0],  # DistributedSampler(5 items, 2 ranks) gathered: 0 repeated as padding
    [5, 5, 5, 1, 5, 1, 0],
    [7],
    [2, 9, 4, 9, 2, 4, 11, 3],  # not contiguous
])
def test_first_occurrence_equals_a_loop(index):
    order, values = _first_occurrence(torch.tensor(index))
    exp_order, exp_values = first_occurrence_loop(index)
    assert order.tolist() == exp_order
    assert values.tolist() == exp_values


def test_first_occurrence_of_a_random_long_index():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 50, (400,), generator=g)
    order, values = _first_occurrence(index)
    exp_order, exp_values = first_occurrence_loop(index.tolist())
    assert order.tolist() == exp_order and values.tolist() == exp_values


def test_first_occurrence_of_an_empty_index():
    order, values = _first_occurrence(torch.zeros(0, dtype=torch.long))
    assert order.numel() == 0 and values.numel() == 0


# ---------------------------------------------------------------------------------------------- EvalBuffer


def test_new_buffer_is_empty_and_clear_empties_it():
    buffer = EvalBuffer()
    assert buffer.empty
    idx = torch.tensor([0, 1])
    buffer.add_videos(video_features(idx), idx, torch.ones(2))
    assert not buffer.empty
    buffer.clear()
    assert buffer.empty
    buffer.add_texts(text_features(idx), idx, idx)
    assert not buffer.empty
    buffer.clear()
    assert buffer.empty and buffer.videos == [] and buffer.texts == [] and buffer.video_index == []


@pytest.mark.parametrize("missing", ["videos", "texts", "both"])
def test_gathered_needs_both_loaders(missing):
    buffer = EvalBuffer()
    idx = torch.tensor([0, 1])
    if missing not in ("videos", "both"):
        buffer.add_videos(video_features(idx), idx, torch.ones(2))
    if missing not in ("texts", "both"):
        buffer.add_texts(text_features(idx), idx, idx)
    with pytest.raises(RuntimeError, match="both loaders"):
        buffer.gathered(identity)


@pytest.mark.parametrize("world,shuffle", [(1, False), (2, False), (3, True), (4, True)])
def test_gathered_drops_sampler_padding_and_sorts_by_index(world, shuffle):
    n_videos, n_texts = 7, 10
    caption_video = {c: (3 * c) % n_videos for c in range(n_texts)}
    bad = {2, 5}
    # The all-gather concatenates the ranks in rank order: one buffer filled rank after rank is the same stream.
    video_stream = [v for rank in sampler_indices(n_videos, world, shuffle) for v in rank]
    text_stream = [c for rank in sampler_indices(n_texts, world, shuffle) for c in rank]
    if world > 1:
        assert len(video_stream) > n_videos or len(text_stream) > n_texts  # there is padding to drop
    buffer = EvalBuffer()
    fill(buffer, video_stream, text_stream, caption_video, bad)
    text, text_index, caption_vid, video, video_ok = buffer.gathered(identity)

    assert text_index.tolist() == list(range(n_texts))
    assert len(video) == n_videos and len(text) == n_texts
    # Per element: row i is the item with index i.
    for v in range(n_videos):
        expected = video_features(torch.tensor([v]))
        for got, exp in zip(vars(video).values(), vars(expected).values()):
            assert torch.equal(got[v], exp[0])
    for c in range(n_texts):
        expected = text_features(torch.tensor([c]))
        for got, exp in zip(vars(text).values(), vars(expected).values()):
            assert torch.equal(got[c], exp[0])
    assert caption_vid.tolist() == [caption_video[c] for c in range(n_texts)]
    assert video_ok.dtype == torch.bool
    assert video_ok.tolist() == [v not in bad for v in range(n_videos)]
    assert video.frame_mask.dtype == torch.bool and text.word_mask.dtype == torch.bool


def test_gathered_keeps_the_first_occurrence_of_a_duplicate():
    # Padding repeats the same item, so any copy would do; the documented choice is the first one.
    buffer = EvalBuffer()
    first = video_features(torch.tensor([0, 1]))
    buffer.add_videos(first, torch.tensor([0, 1]), torch.tensor([1, 1]))
    repeat = video_features(torch.tensor([2, 0]))
    repeat.video_emb[1] = 99.0  # a different copy of video 0, seen second
    buffer.add_videos(repeat, torch.tensor([2, 0]), torch.tensor([1, 0]))
    buffer.add_texts(text_features(torch.tensor([1, 0, 1])), torch.tensor([1, 0, 1]), torch.tensor([4, 5, 6]))
    _text, text_index, caption_vid, video, video_ok = buffer.gathered(identity)
    torch.testing.assert_close(video.video_emb[0], first.video_emb[0])
    assert video_ok.tolist() == [True, True, True]  # video 0's first copy decoded
    assert text_index.tolist() == [0, 1]
    assert caption_vid.tolist() == [5, 4]  # caption 1's first occurrence carries video 4


def test_gathered_applies_the_gather_to_every_tensor():
    # A gather standing for two identical ranks: everything duplicated, still V unique videos in index order.
    calls = []

    def twice(t):
        calls.append(t.shape)
        return torch.cat([t, t])

    buffer = EvalBuffer()
    fill(buffer, [2, 0, 1], [1, 0], {0: 2, 1: 1}, bad={1})
    _text, text_index, caption_vid, video, video_ok = buffer.gathered(twice)
    assert len(calls) == 2 + 3 + 3 + 2  # indices, video fields, text fields, video_ok, caption_video
    assert len(video) == 3 and text_index.tolist() == [0, 1]
    assert torch.equal(video.video_emb, video_features(torch.arange(3)).video_emb)
    assert video_ok.tolist() == [True, False, True]
    assert caption_vid.tolist() == [2, 1]


@pytest.mark.parametrize("video_idx", [[0, 1, 3], [1, 2], [0, 0, 2]], ids=["gap", "no-zero", "missing-after-dedup"])
def test_gathered_rejects_videos_that_are_not_0_to_v_minus_1(video_idx):
    buffer = EvalBuffer()
    fill(buffer, video_idx, [0], {0: 0}, bad=set())
    with pytest.raises(RuntimeError, match="not 0..V-1"):
        buffer.gathered(identity)


def test_gathered_does_not_require_contiguous_captions():
    # Only the videos must be 0..V-1; caption indices come back as they are, sorted and de-duplicated.
    buffer = EvalBuffer()
    fill(buffer, [0, 1], [9, 4, 9, 6], {9: 1, 4: 0, 6: 1}, bad=set())
    text, text_index, caption_vid, _, _ = buffer.gathered(identity)
    assert text_index.tolist() == [4, 6, 9]
    assert caption_vid.tolist() == [0, 1, 1]
    torch.testing.assert_close(text.sentence_emb[:, 0], torch.tensor([-4.0, -6.0, -9.0]))


# ---------------------------------------------------------------------------------------------- metric table


def test_metric_table_text():
    metrics = {
        "v2t/R@1": 40.04, "v2t/R@5": 70.0, "v2t/R@10": 80.96, "v2t/MdR": 2.0, "v2t/MnR": 12.345,
        "t2v/R@1": 46.15, "t2v/R@5": 73.0, "t2v/R@10": 83.05, "t2v/MdR": 2.0, "t2v/MnR": 13.25,
        "val_loss": 1.5,
    }
    expected = (
        "validation retrieval\n"
        "| direction | R@1 | R@5 | R@10 | MdR | MnR |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| t2v | 46.1 | 73.0 | 83.0 | 2.0 | 13.2 |\n"
        "| v2t | 40.0 | 70.0 | 81.0 | 2.0 | 12.3 |"
    )
    # One decimal, rounded: 46.15 and 83.05 are just below .x5 in binary, 13.25 rounds half to even.
    assert format_metric_table(metrics, title="validation retrieval") == expected


def test_metric_table_rows_in_fixed_order_and_only_present_directions():
    metrics = {}
    for k, direction in enumerate(["v2t_standard", "v2t_group_max", "t2v"]):  # insertion order reversed
        for j, col in enumerate(["R@1", "R@5", "R@10", "MdR", "MnR"]):
            metrics[f"{direction}/{col}"] = 10 * k + j + 0.25
    lines = format_metric_table(metrics).split("\n")
    assert lines[0] == "retrieval"  # default title
    assert [line.split(" | ")[0] for line in lines[3:]] == ["| t2v", "| v2t_group_max", "| v2t_standard"]
    assert lines[3] == "| t2v | 20.2 | 21.2 | 22.2 | 23.2 | 24.2 |"
    assert lines[5] == "| v2t_standard | 0.2 | 1.2 | 2.2 | 3.2 | 4.2 |"


def test_metric_table_without_metrics_is_the_header_only():
    assert format_metric_table({}, title="t") == "t\n| direction | R@1 | R@5 | R@10 | MdR | MnR |\n|---|---:|---:|---:|---:|---:|"


def test_metric_table_missing_column_is_an_error():
    # A direction is listed when its R@1 is present; the other columns must be there too.
    with pytest.raises(KeyError):
        format_metric_table({"t2v/R@1": 1.0})
