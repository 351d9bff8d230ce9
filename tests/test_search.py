"""Coarse-to-fine ranking against the exact ranking, query encoding, and reading prediction files back."""
from types import SimpleNamespace

import pytest
import torch
from helpers_model import random_features, randomize_matrices

from xclip_pl import XCLIP
from xclip_pl.callbacks.prediction_writer import EmbeddingWriter
from xclip_pl.data.records import VideoRecord
from xclip_pl.tools.search import encode_query, load_embeddings, rank_texts, rank_videos

WORDS, FRAMES = 8, 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    m = XCLIP("tiny", max_words=WORDS, max_frames=FRAMES).eval()
    randomize_matrices(m)
    return m


@pytest.fixture(scope="module")
def features(model):
    torch.manual_seed(4)
    return random_features(6, 40, WORDS, FRAMES, model.towers.embed_dim)  # 6 text queries, 40 videos


def exact(model, text, video):
    with torch.no_grad():
        return model.similarity(text, video)  # [texts, videos]


def test_k_all_is_the_exact_ranking(model, features):
    text, video = features
    sim = exact(model, text, video)
    indices, scores = rank_videos(model, text, video, k=None)
    assert indices.shape == scores.shape == (6, 40)
    torch.testing.assert_close(scores, sim.sort(1, descending=True).values)
    torch.testing.assert_close(sim.gather(1, indices), scores)
    assert torch.equal(indices, sim.argsort(dim=1, descending=True, stable=True))
    t_indices, t_scores = rank_texts(model, video[:5], text, k=None)  # videos as queries
    assert torch.equal(t_indices, sim[:, :5].t().argsort(dim=1, descending=True, stable=True))
    torch.testing.assert_close(t_scores, sim[:, :5].t().sort(1, descending=True).values)


def test_a_large_enough_shortlist_finds_the_exact_top_k(model, features):
    text, video = features
    sim = exact(model, text, video)
    top = 3
    exact_top = sim.topk(top, dim=1).indices  # [q, 3]
    coarse = (text.sentence_emb @ model.similarity_head.global_mat_weight.detach()) @ video.video_emb.t()
    coarse_rank = coarse.argsort(1, descending=True).argsort(1)  # position of each video in the coarse order
    needed = int(coarse_rank.gather(1, exact_top).max()) + 1  # shortlist that holds every exact top-3 video
    for shortlist in {needed, min(40, needed + 5)}:
        indices, scores = rank_videos(model, text, video, k=top, shortlist=shortlist)
        assert torch.equal(indices, exact_top)
        torch.testing.assert_close(scores, sim.gather(1, exact_top))
    # with k as the only knob (shortlist = k), k = needed also contains the exact top-3 first
    indices, _ = rank_videos(model, text, video, k=needed)
    assert torch.equal(indices[:, :top], exact_top)


def test_a_short_shortlist_only_returns_coarse_candidates(model, features):
    text, video = features
    indices, scores = rank_videos(model, text, video, k=2, shortlist=4)
    coarse = (text.sentence_emb @ model.similarity_head.global_mat_weight.detach()) @ video.video_emb.t()
    candidates = coarse.topk(4, dim=1).indices
    assert all(set(indices[i].tolist()) <= set(candidates[i].tolist()) for i in range(len(text)))
    assert (scores[:, 0] >= scores[:, 1]).all()
    sim = exact(model, text, video)
    torch.testing.assert_close(sim.gather(1, indices), scores)


def test_bare_head_ranks_like_the_model(model, features):
    text, video = features
    indices, _ = rank_videos(model.similarity_head, text, video, k=5, shortlist=20)
    assert torch.equal(indices, rank_videos(model, text, video, k=5, shortlist=20)[0])


QUERY_CAPTIONS = ["A  DOG", "dog &amp;amp; man", "\u201cdog\u201d", "caf\u00c3\u00a9", "a dog " * 10]
# upper case and spaces, an HTML entity, curly quotes, mojibake, longer than max_words
TRAIN_CAPTIONS = ["a dog and a man in a caf\u00e9", "the man says \"dog\" & the dog runs"]


def test_encode_query_matches_the_datamodule_tokenisation(model, tmp_path):
    import csv

    from helpers_media import write_video

    from datamodules.folder import FolderDataModule

    rows = [("train.mp4", caption, "train") for caption in TRAIN_CAPTIONS * 20]
    rows += [(f"test{i}.mp4", caption, "test") for i, caption in enumerate(QUERY_CAPTIONS)]
    with open(tmp_path / "captions.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("video", "caption", "split"), *rows])
    for video in {r[0] for r in rows}:
        write_video(tmp_path / video, num_frames=4, width=32, height=32)
    dm = FolderDataModule(root=str(tmp_path), max_words=WORDS, max_frames=FRAMES, image_size=32, eval_batch_size=2,
                          num_workers=0, tokenizer_dir=str(tmp_path / "tok"), tokenizer_vocab_size=600)
    dm.setup("test")
    batches = list(dm.test_dataloader()[1])  # the captions loader, as evaluation and prediction read it
    ids, mask = torch.cat([b["input_ids"] for b in batches]), torch.cat([b["attention_mask"] for b in batches])
    assert torch.cat([b["text_index"] for b in batches]).tolist() == list(range(len(QUERY_CAPTIONS)))
    assert int(mask[-1].sum()) == WORDS and (mask[:-1].sum(1) < WORDS).all()  # truncated; the others padded
    with torch.no_grad():
        want = model.encode_text(ids, mask)
    model.train()  # encode_query puts the model in eval mode and back
    got = encode_query(model, dm.tokenizer, QUERY_CAPTIONS, max_words=WORDS)
    assert model.training is True
    model.eval()
    assert got.sentence_emb.shape == (len(QUERY_CAPTIONS), model.towers.embed_dim)
    torch.testing.assert_close(got.sentence_emb, want.sentence_emb, rtol=0, atol=0)
    torch.testing.assert_close(got.word_emb, want.word_emb, rtol=0, atol=0)
    assert torch.equal(got.word_mask, want.word_mask)
    one = encode_query(model, dm.tokenizer, QUERY_CAPTIONS[1], max_words=WORDS)  # a single string
    torch.testing.assert_close(one.word_emb, want.word_emb[1:2], rtol=0, atol=0)


def test_load_embeddings_round_trip_from_the_writer(model, tmp_path):
    torch.manual_seed(5)
    text, video = random_features(5, 3, WORDS, FRAMES, model.towers.embed_dim)
    records = [VideoRecord("v0", tmp_path / "a.mp4", ["a dog", "a cat"]), VideoRecord("v1", tmp_path / "b.mp4", ["red car"]),
               VideoRecord("v2", tmp_path / "c.mp4", ["sea", "sky"])]
    caption_video = torch.tensor([0, 0, 1, 2, 2])
    # predictions as predict_step returns them, in two batches and out of index order
    vids = [{"video_index": torch.tensor([2, 0]), "video_emb": video.video_emb[[2, 0]], "frame_emb": video.frame_emb[[2, 0]],
             "frame_mask": video.frame_mask[[2, 0]]},
            {"video_index": torch.tensor([1]), "video_emb": video.video_emb[[1]], "frame_emb": video.frame_emb[[1]],
             "frame_mask": video.frame_mask[[1]]}]
    txts = [{"text_index": torch.arange(5), "caption_video": caption_video, "sentence_emb": text.sentence_emb,
             "word_emb": text.word_emb, "word_mask": text.word_mask}]
    trainer = SimpleNamespace(global_rank=0, world_size=1, datamodule=SimpleNamespace(predict_records=records))
    EmbeddingWriter(str(tmp_path)).write_on_epoch_end(trainer, None, [vids, txts], None)

    t, v, videos_df, texts_df = load_embeddings(tmp_path)
    for got, want in ((t.sentence_emb, text.sentence_emb), (t.word_emb, text.word_emb), (v.video_emb, video.video_emb),
                      (v.frame_emb, video.frame_emb)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert t.word_mask.dtype == torch.bool and torch.equal(t.word_mask, text.word_mask)
    assert v.frame_mask.dtype == torch.bool and torch.equal(v.frame_mask, video.frame_mask)
    assert videos_df["video_id"].tolist() == ["v0", "v1", "v2"] and videos_df["video_index"].tolist() == [0, 1, 2]
    assert texts_df["caption"].tolist() == ["a dog", "a cat", "red car", "sea", "sky"]
    assert texts_df["video_index"].tolist() == caption_video.tolist()
    # the loaded features rank like the originals
    torch.testing.assert_close(rank_videos(model, t, v)[1], rank_videos(model, text, video)[1])


def test_load_embeddings_merges_rank_files(model, tmp_path):
    torch.manual_seed(6)
    text, video = random_features(4, 4, WORDS, FRAMES, model.towers.embed_dim)
    records = [VideoRecord(f"v{i}", tmp_path / f"{i}.mp4", [f"caption {i}"]) for i in range(4)]
    for rank, idx in enumerate([[0, 2, 0], [1, 3]]):  # rank 0 padded with a repeat, as DistributedSampler does
        idx = torch.tensor(idx)
        vids = [{"video_index": idx, "video_emb": video.video_emb[idx], "frame_emb": video.frame_emb[idx], "frame_mask": video.frame_mask[idx]}]
        txts = [{"text_index": idx, "caption_video": idx, "sentence_emb": text.sentence_emb[idx], "word_emb": text.word_emb[idx],
                 "word_mask": text.word_mask[idx]}]
        trainer = SimpleNamespace(global_rank=rank, world_size=2, datamodule=SimpleNamespace(predict_records=records))
        EmbeddingWriter(str(tmp_path)).write_on_epoch_end(trainer, None, [vids, txts], None)
    t, v, videos_df, texts_df = load_embeddings(tmp_path)
    torch.testing.assert_close(v.video_emb, video.video_emb, rtol=0, atol=0)
    torch.testing.assert_close(t.word_emb, text.word_emb, rtol=0, atol=0)
    assert videos_df["video_id"].tolist() == ["v0", "v1", "v2", "v3"]
    assert texts_df["caption"].tolist() == [f"caption {i}" for i in range(4)]


def test_missing_files_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="videos.safetensors"):
        load_embeddings(tmp_path)
