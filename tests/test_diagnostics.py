"""RetrievalDiagnostics and its maths: the four terms add up to the logits, entropies, ranks, files written."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers_model import make_module, random_features, randomize_matrices

from datamodules.synthetic import SyntheticDataModule
from xclip_pl import XCLIP
from xclip_pl.callbacks.diagnostics import (
    RetrievalDiagnostics,
    ground_truth_rank_lists,
    rank_histogram,
    sample_positions,
)
from xclip_pl.callbacks.figures import bar_chart, colormap, heatmap
from xclip_pl.callbacks.term_diagnostics import (
    TERMS,
    attention_entropies,
    similarity_terms,
    softmax_entropy,
    term_diagnostics,
)
from xclip_pl.evaluate.retrieval import retrieval_metrics


@pytest.mark.parametrize("mask_padding", [False, True])
def test_the_four_terms_add_up_to_the_logits(mask_padding):
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=8, max_frames=4, mask_padding=mask_padding)
    randomize_matrices(model)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))
    text, video = random_features(5, 7, 8, 4, model.similarity_head.global_mat_weight.shape[0])
    terms = similarity_terms(model, text, video)
    assert tuple(terms) == TERMS and all(t.shape == (5, 7) for t in terms.values())
    with torch.no_grad():
        logits = model.similarity(text, video, kernel="torch")
    torch.testing.assert_close(sum(terms.values()), logits, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(terms["video_word"], terms["frame_word"])  # four different terms, not one split in 4


def test_term_diagnostics_shares_gaps_and_r1():
    eye = torch.eye(4)
    terms = {"video_sentence": 3.0 * eye, "video_word": -torch.ones(4, 4), "sentence_frame": torch.zeros(4, 4),
             "frame_word": eye.flip(0)}
    d = term_diagnostics(terms)
    assert d["share/video_word"] == pytest.approx(1.0 / (0.75 + 1.0 + 0.0 + 0.25))
    assert sum(d[f"share/{t}"] for t in TERMS) == pytest.approx(1.0)
    assert d["gap/video_sentence"] == pytest.approx(3.0) and d["gap/video_word"] == pytest.approx(0.0)
    assert d["gap/frame_word"] == pytest.approx(-1.0 / 3.0)
    assert d["R@1/video_sentence"] == 100.0 and d["R@1/frame_word"] == 0.0


def test_softmax_entropy_uniform_peaked_and_masked():
    logits = torch.zeros(1, 4, 2)
    logits[0, 0, 1] = 1e4  # second pair: all mass on position 0
    entropy, kept = softmax_entropy(logits, None)
    assert entropy[0, 0] == pytest.approx(math.log(4)) and entropy[0, 1] == pytest.approx(0.0, abs=1e-6)
    keep = torch.tensor([True, True, False, False]).view(1, 4, 1)
    entropy, kept = softmax_entropy(torch.zeros(1, 4, 2), keep)
    assert entropy[0, 0] == pytest.approx(math.log(2)) and kept.tolist() == [[2.0, 2.0]]


def test_attention_entropies_are_within_their_bounds():
    torch.manual_seed(0)
    model = XCLIP("tiny", max_words=8, max_frames=4, mask_padding=True)
    text, video = random_features(3, 3, 8, 4, model.similarity_head.global_mat_weight.shape[0])
    got = attention_entropies(model, text, video)
    assert set(got) == {"entropy/words", "entropy/frames", "entropy_normalised/words", "entropy_normalised/frames"}
    assert 0 <= got["entropy/words"] <= math.log(8) and 0 <= got["entropy/frames"] <= math.log(4)
    assert 0 <= got["entropy_normalised/words"] <= 1 + 1e-6 and 0 <= got["entropy_normalised/frames"] <= 1 + 1e-6


def test_sample_positions_take_one_caption_per_decodable_video():
    caption_video = torch.tensor([2, 0, 0, 1, 2, 3])
    missing = torch.tensor([False, True, False, False])
    captions, videos = sample_positions(caption_video, missing, 2)
    assert videos.tolist() == [0, 2] and captions.tolist() == [1, 0]


def test_rank_lists_agree_with_the_metrics_and_the_histogram_counts_them():
    torch.manual_seed(0)
    sim = torch.randn(9, 4)
    caption_video = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 3])
    missing = torch.tensor([False, False, True, False])
    t2v, v2t = ground_truth_rank_lists(sim, caption_video, missing, "pessimistic")
    metrics = retrieval_metrics(sim, caption_video, "pessimistic", missing)
    assert 100 * (t2v <= 1).double().mean().item() == pytest.approx(metrics["t2v/R@1"])
    assert t2v.double().mean().item() == pytest.approx(metrics["t2v/MnR"])
    assert v2t.double().mean().item() == pytest.approx(metrics["v2t/MnR"])
    labels, counts = rank_histogram(torch.tensor([1, 1, 2, 7, 12, 30]), largest=30)
    assert labels == ["1", "2", "3", "4", "5", "6-10", "11-20", ">=21"]
    assert counts == [2, 1, 0, 0, 0, 1, 1, 1]


def test_figures():
    assert colormap(np.array([0.0, 1.0])).tolist() == [[68, 1, 84], [253, 231, 37]]
    image = heatmap(np.arange(6.0).reshape(2, 3), cell=4)
    assert image.shape == (8, 12, 3) and image.dtype == np.uint8
    assert (image[1:3, 1:3] == 255).all() and not (image[1:3, 5:7] == 255).all()  # the diagonal is marked
    chart = bar_chart(["1", "2"], {"t2v": [3, 1], "v2t": [0, 2]}, width=200, height=100)
    assert chart.shape == (100, 200, 3) and (chart != 255).any()


def test_test_run_writes_every_diagnostics_file(tmp_path):
    datamodule = SyntheticDataModule(root=str(tmp_path / "data"), num_train=12, num_test=6, max_words=16, max_frames=3,
                                     image_size=32, batch_size=4, eval_batch_size=4, num_workers=0)
    module = make_module(clip="tiny", max_words=16, max_frames=3, temporal_layers=1)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path),
                         callbacks=[RetrievalDiagnostics(heatmap_size=4, sample_size=5)])
    trainer.test(module, datamodule=datamodule, verbose=False)
    out = tmp_path / "diagnostics" / "test"
    block = np.load(out / "similarity_block.npy")
    assert block.shape == (4, 4)
    header = (out / "similarity_block.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "caption_index" and len(header) == 5 and header[1] == datamodule.eval_video_id("test", 0)
    assert (out / "similarity_block.png").stat().st_size > 0 and (out / "rank_histogram.png").stat().st_size > 0
    t2v = np.load(out / "ranks_t2v.npy")
    assert len(t2v) == 6 and len(np.load(out / "ranks_v2t.npy")) == 6
    assert 100 * (t2v <= 1).mean() == pytest.approx(float(trainer.callback_metrics["test/t2v/R@1"]))
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert sum(diagnostics[f"diagnostics/share/{t}"] for t in TERMS) == pytest.approx(1.0)
    assert diagnostics["diagnostics/sample_size"] == 5.0
    assert diagnostics["logit_scale"] == pytest.approx(module.model.logit_scale.exp().item())
    for key in ("test/diagnostics/share/frame_word", "test/diagnostics/entropy/words", "test/logit_scale"):
        assert key in trainer.callback_metrics, key
    assert len((out / "history.jsonl").read_text().splitlines()) == 1
