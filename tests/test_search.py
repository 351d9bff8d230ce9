"""Coarse-to-fine ranking against the exact ranking, query encoding, and reading prediction files back."""
from types import SimpleNamespace

import pytest
import torch

from helpers_model import random_features, randomize_matrices
from xclip_pl import XCLIP
from xclip_pl.data.records import VideoRecord
from xclip_pl.predict import EmbeddingWriter
from xclip_pl.search import encode_query, load_embeddings, rank_texts, rank_videos

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


def test_encode_query_matches_the_datamodule_tokenisation(model):
    class ToyTokenizer:  # the interface tokenize() uses
        bos_token_id, eos_token_id = 1022, 1023

        def __call__(self, texts, add_special_tokens, truncation, max_length):
            return {"input_ids": [[3 + (ord(c) % 50) for c in t.split()[0]][:max_length] for t in texts]}

    feats = encode_query(model, ToyTokenizer(), "cat on a mat", max_words=WORDS)
    assert feats.sentence_emb.shape == (1, model.towers.embed_dim) and feats.word_emb.shape == (1, WORDS, model.towers.embed_dim)
    assert feats.word_mask[0].tolist() == [True] * 5 + [False] * 3  # SOT, "cat", EOT
    assert model.training is False
    two = encode_query(model, ToyTokenizer(), ["cat", "dog"], max_words=WORDS)
    assert len(two) == 2


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
