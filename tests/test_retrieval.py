"""Retrieval metrics against hand-computed values and torchmetrics."""
import pytest
import torch
from torchmetrics.retrieval import RetrievalRecall

from xclip_pl.evaluate.retrieval import RetrievalMetrics, ground_truth_ranks, retrieval_metrics


def test_hand_computed_one_to_one():
    sim = torch.tensor([[0.9, 0.1, 0.3, 0.0],   # caption 0 -> video 0 at rank 1
                        [0.8, 0.5, 0.7, 0.0],   # caption 1 -> video 1 at rank 3
                        [0.1, 0.2, 0.3, 0.0],   # caption 2 -> video 2 at rank 1
                        [0.5, 0.6, 0.7, 0.1]])  # caption 3 -> video 3 at rank 4
    m = retrieval_metrics(sim, torch.arange(4))
    assert m["t2v/R@1"] == pytest.approx(50.0) and m["t2v/R@5"] == pytest.approx(100.0)
    assert m["t2v/MdR"] == pytest.approx(2.0)  # ranks 1, 3, 1, 4 -> median of 1,1,3,4 = (1+3)/2
    assert m["t2v/MnR"] == pytest.approx(9 / 4)
    # video -> text: columns. video 0: [0.9, .8, .1, .5] -> rank 1; video 1: [.1,.5,.2,.6] -> 2;
    # video 2: [.3,.7,.3,.7] -> caption 2 scores .3, ties with caption 0, below .7 twice -> 4 (pessimistic);
    # video 3: [0,0,0,.1] -> 1
    assert m["v2t/R@1"] == pytest.approx(50.0)
    assert m["v2t/MnR"] == pytest.approx((1 + 2 + 4 + 1) / 4)


def test_tie_rules():
    sim = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    positives = torch.tensor([[True, False, False, False]])
    assert ground_truth_ranks(sim, positives, "pessimistic").item() == 3
    assert ground_truth_ranks(sim, positives, "optimistic").item() == 1
    assert ground_truth_ranks(sim, positives, "mean").item() == 2


def test_identical_scores_are_not_free_hits():
    sim = torch.zeros(5, 5)  # e.g. every video undecodable: all scores equal
    m = retrieval_metrics(sim, torch.arange(5))
    assert m["t2v/R@1"] == 0.0 and m["t2v/MdR"] == 5.0


def test_multi_caption_video_to_text_uses_best_caption():
    # 3 videos, 5 captions: captions 0,1 -> video 0; 2 -> 1; 3,4 -> 2
    caption_video = torch.tensor([0, 0, 1, 2, 2])
    sim = torch.tensor([[0.1, 0.9, 0.0],
                        [0.8, 0.2, 0.1],
                        [0.3, 0.4, 0.2],
                        [0.7, 0.1, 0.6],
                        [0.2, 0.3, 0.9]])
    m = retrieval_metrics(sim, caption_video)
    # t2v ranks: c0 -> video 0 scores .1 < .9 -> 2 ; c1 -> 1 ; c2 -> 1 ; c3 -> video 2 .6 < .7 -> 2 ; c4 -> 1
    assert m["t2v/R@1"] == pytest.approx(60.0) and m["t2v/MnR"] == pytest.approx(7 / 5)
    # v2t: video 0 column [.1,.8,.3,.7,.2]: best own caption c1 .8 -> rank 1
    # video 1 column [.9,.2,.4,.1,.3]: own c2 .4, beaten by .9 -> rank 2
    # video 2 column [0,.1,.2,.6,.9]: own c4 .9 -> rank 1
    assert m["v2t/R@1"] == pytest.approx(200 / 3) and m["v2t/MnR"] == pytest.approx(4 / 3)
    # group-max (reference): G[i, j] = max over captions of video i of sim(c, j)
    # G = [[.8, .9, .1], [.3, .4, .2], [.7, .3, .9]]; video j ranks groups by column j:
    # video 0: [.8, .3, .7] -> own .8 rank 1; video 1: [.9, .4, .3] -> own .4 rank 2; video 2: [.1,.2,.9] -> 1
    assert m["v2t_group_max/R@1"] == pytest.approx(200 / 3) and m["v2t_group_max/MnR"] == pytest.approx(4 / 3)


def test_group_max_is_more_lenient_than_standard():
    # video 1 has captions 1,2; video 0 has caption 0. Video 0's column: c0 .5, c1 .6, c2 .7
    # standard: two captions of the other video beat c0 -> rank 3; group-max: group 1 (max .7) beats -> rank 2
    caption_video = torch.tensor([0, 1, 1])
    sim = torch.tensor([[0.5, 0.1], [0.6, 0.9], [0.7, 0.8]])
    m = retrieval_metrics(sim, caption_video)
    assert m["v2t/MnR"] == pytest.approx((3 + 1) / 2)
    assert m["v2t_group_max/MnR"] == pytest.approx((2 + 1) / 2)
    assert "v2t_group_max/R@1" not in retrieval_metrics(torch.eye(3), torch.arange(3))  # 1:1 data: one convention


def test_undecodable_videos_are_misses_and_never_outrank():
    sim = torch.eye(4) + 0.1  # every caption finds its video first
    missing = torch.tensor([False, True, False, False])
    m = retrieval_metrics(sim, torch.arange(4), missing_videos=missing)
    assert m["t2v/R@1"] == pytest.approx(75.0) and m["v2t/R@1"] == pytest.approx(75.0)
    assert m["t2v/MnR"] == pytest.approx((1 + 4 + 1 + 1) / 4)  # the missing one gets the worst rank
    sim[0, 1] = 5.0  # a (stale) high score on the missing video's column must not outrank video 0
    assert retrieval_metrics(sim, torch.arange(4), missing_videos=missing)["t2v/R@1"] == pytest.approx(75.0)


def test_non_finite_scores_are_an_error():
    sim = torch.eye(3)
    sim[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_metrics(sim, torch.arange(3))


@pytest.mark.parametrize("k", [1, 5, 10])
def test_matches_torchmetrics_recall(k):
    torch.manual_seed(3)
    n = 40
    sim = torch.randn(n, n) + 2 * torch.eye(n)
    ours = retrieval_metrics(sim, torch.arange(n))[f"t2v/R@{k}"] / 100
    # torchmetrics >= 1.8 treats a positive with score <= 0 as not retrieved: shift to positive scores
    shifted = sim - sim.min() + 1.0
    recall = RetrievalRecall(top_k=k)
    ref = recall(shifted.flatten(), torch.eye(n, dtype=torch.bool).flatten(), indexes=torch.arange(n).repeat_interleave(n))
    assert ours == pytest.approx(ref.item(), abs=1e-6)


def test_metric_deduplicates_padded_rows_and_accepts_any_row_order():
    torch.manual_seed(4)
    sim = torch.randn(7, 7) + torch.eye(7)
    metric = RetrievalMetrics()
    metric.update(sim[4:], torch.arange(4, 7), torch.arange(4, 7))
    metric.update(sim[:4], torch.arange(4), torch.arange(4))
    metric.update(sim[:1], torch.arange(1), torch.arange(1))  # a sampler-padding duplicate
    assert metric.compute() == retrieval_metrics(sim, torch.arange(7))


#: 3 test videos with 2, 1 and 2 captions, and the scores the model is made to give (captions x videos)
GROUPED = {"video_a.mp4": ["caption zero", "caption one"], "video_b.mp4": ["caption two"],
           "video_c.mp4": ["caption three", "caption four"]}
HAND_SIM = {"caption zero": [0.5, 0.1, 0.0], "caption one": [0.2, 0.9, 0.3], "caption two": [0.3, 0.8, 0.1],
            "caption three": [0.7, 0.2, 0.4], "caption four": [0.65, 0.3, 0.9]}
# v2t, video a's column: own captions .5, .2; others .3, .7, .65. Standard: .7 and .65 beat .5 -> rank 3.
#   group-max: groups score a with their best caption: a .5, b .3, c max(.7, .65) = .7 -> rank 2.
# video b's column: own .8; others .1, .9, .2, .3 -> standard rank 2; groups a .9, b .8, c .3 -> rank 2.
# video c's column: own .4, .9 -> rank 1 either way.
STANDARD = {"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 2.0}  # ranks 3, 2, 1
GROUP_MAX = {"R@1": 100 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 2.0, "MnR": 5 / 3}  # ranks 2, 2, 1


@pytest.mark.parametrize("convention", ["standard", "group_max"])
def test_v2t_multi_caption_switch_logs_the_chosen_convention_as_v2t(tmp_path, convention):
    """``model.v2t_multi_caption``: a test run on multi-caption data logs the chosen video-to-text
    convention as ``test/v2t/*`` and the other beside it (hand-computed ranks above)."""
    import csv

    import pytorch_lightning as pl
    from helpers_media import write_video
    from helpers_model import make_module

    from datamodules.folder import FolderDataModule

    rows = [("train.mp4", "a train caption", "train")]
    rows += [(video, caption, "test") for video, captions in GROUPED.items() for caption in captions]
    with open(tmp_path / "captions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("video", "caption", "split"), *rows])
    for seed, video in enumerate(sorted({r[0] for r in rows})):
        write_video(tmp_path / video, num_frames=4, width=32, height=32, seed=seed)
    dm = FolderDataModule(root=str(tmp_path), max_words=8, max_frames=2, image_size=32, batch_size=1,
                          eval_batch_size=2, num_workers=0, tokenizer_dir=str(tmp_path / "tok"), tokenizer_vocab_size=600)
    module = make_module(clip="tiny", max_words=8, max_frames=2, temporal_layers=1, v2t_multi_caption=convention)

    def hand_scores(text, video, *args, **kwargs):  # the hand matrix, in the order the evaluation indexes
        videos = [dm.eval_video_id("test", j) for j in range(len(video))]
        captions = [dm.eval_caption("test", i) for i in range(len(text))]
        columns = [list(GROUPED).index(v) for v in videos]
        return torch.tensor([[HAND_SIM[c][k] for k in columns] for c in captions])

    module.model.similarity = hand_scores
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.test(module, datamodule=dm, verbose=False)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert logged["test/num_captions"] == 5 and logged["test/num_videos"] == 3
    headline, other, other_name = (STANDARD, GROUP_MAX, "v2t_group_max") if convention == "standard" else (
        GROUP_MAX, STANDARD, "v2t_standard")
    for name in STANDARD:
        assert logged[f"test/v2t/{name}"] == pytest.approx(headline[name]), name
        assert logged[f"test/{other_name}/{name}"] == pytest.approx(other[name]), name
