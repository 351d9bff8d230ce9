"""Ranking a collection from the embeddings ``xclip-pl predict`` writes.

``EmbeddingWriter`` leaves ``videos.safetensors`` (video_emb, frame_emb, frame_mask as uint8,
video_index), ``texts.safetensors`` (sentence_emb, word_emb, word_mask, text_index, caption_video)
and ``videos.csv`` / ``texts.csv`` (index -> video id and path / caption). :func:`load_embeddings`
reads them back; :func:`rank_videos` and :func:`rank_texts` rank a gallery for one or more queries;
:func:`encode_query` encodes a caption that is not in the files.

X-CLIP's score is not a single dot product (xclip-method.md 1.11), so a large gallery is ranked coarse
to fine: the cheap video-sentence score ``t W_g v`` (one dot product per pair) shortlists candidates,
and the full four-term multi-grained score re-ranks only those. ``k=None`` scores everything and gives
the exact ranking.

Example::

    text, video, videos_df, texts_df = load_embeddings("predictions")
    query = encode_query(model, tokenizer, "a man is cooking pasta", max_words=32)
    indices, scores = rank_videos(model, query, video, k=10, shortlist=200)
    videos_df.iloc[indices[0].tolist()]
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from torch import Tensor

from xclip_pl.data.tokenizer import tokenize
from xclip_pl.model.features import TextFeatures, VideoFeatures
from xclip_pl.model.similarity import MultiGrainedSimilarity
from xclip_pl.model.xclip import XCLIP


# ------------------------------------------------------------------------------------------------ files
def _tensor_files(directory: Path, name: str) -> list[Path]:
    single = directory / f"{name}.safetensors"
    if single.exists():
        return [single]
    ranks = sorted(directory.glob(f"rank*-{name}.safetensors"), key=lambda p: int(p.name[4:].split("-")[0]))
    if not ranks:
        raise FileNotFoundError(f"no {name}.safetensors (nor rank*-{name}.safetensors) in {directory}")
    return ranks


def _load_rows(directory: Path, name: str, index_key: str) -> dict[str, Tensor]:
    """The tensors of every file of ``name``, concatenated, de-duplicated by ``index_key`` (distributed
    prediction pads the last batch with repeats) and ordered by index."""
    parts = [load_file(str(p)) for p in _tensor_files(directory, name)]
    tensors = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    index = tensors[index_key].long()
    order = torch.argsort(index, stable=True)
    first = torch.ones_like(order, dtype=torch.bool)
    first[1:] = index[order][1:] != index[order][:-1]  # keep the first copy of each index
    keep = order[first]
    return {k: v[keep] for k, v in tensors.items()}


def _read_csv(directory: Path, name: str) -> pd.DataFrame | None:
    for candidate in (directory / f"{name}.csv", directory / f"rank0-{name}.csv"):
        if candidate.exists():
            return pd.read_csv(candidate)
    return None


def load_embeddings(directory: str | Path) -> tuple[TextFeatures, VideoFeatures, pd.DataFrame, pd.DataFrame]:
    """``(texts, videos, videos_df, texts_df)`` from the files ``xclip-pl predict`` writes in ``directory``.

    Rows are ordered by ``video_index`` / ``text_index`` (from several ``rank<N>-`` file sets they are
    merged and de-duplicated). ``videos_df`` has ``video_index``, and ``video_id`` and ``path`` when
    ``videos.csv`` exists; ``texts_df`` has ``text_index``, ``video_index`` (the caption's video), and
    ``caption`` when ``texts.csv`` exists. Row ``i`` of each frame describes row ``i`` of the features.
    Masks come back as bool.
    """
    directory = Path(directory)
    v = _load_rows(directory, "videos", "video_index")
    t = _load_rows(directory, "texts", "text_index")
    video = VideoFeatures(v["video_emb"], v["frame_emb"], v["frame_mask"].bool())
    text = TextFeatures(t["sentence_emb"], t["word_emb"], t["word_mask"].bool())
    videos_df = pd.DataFrame({"video_index": v["video_index"].long().numpy()})
    texts_df = pd.DataFrame({"text_index": t["text_index"].long().numpy(), "video_index": t["caption_video"].long().numpy()})
    videos_csv, texts_csv = _read_csv(directory, "videos"), _read_csv(directory, "texts")
    if videos_csv is not None:
        videos_df = videos_df.merge(videos_csv, on="video_index", how="left")  # left merge keeps the row order
    if texts_csv is not None:
        texts_df = texts_df.merge(texts_csv.drop(columns=["video_index"], errors="ignore"), on="text_index", how="left")
    return text, video, videos_df, texts_df


# ------------------------------------------------------------------------------------------------ query
@torch.no_grad()
def encode_query(model: XCLIP, tokenizer, caption: str | list[str], max_words: int) -> TextFeatures:
    """Text features of one caption (or a list) for a query that is not in the prediction files, with
    the reference's token layout (:func:`xclip_pl.data.tokenizer.tokenize`), on the model's device."""
    captions = [caption] if isinstance(caption, str) else list(caption)
    ids, mask = tokenize(tokenizer, captions, max_words)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return model.encode_text(ids.to(device), mask.to(device))
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------- ranking
def _head_and_scale(model: XCLIP | MultiGrainedSimilarity, logit_scale: float | Tensor | None) -> tuple[MultiGrainedSimilarity, Tensor]:
    if isinstance(model, XCLIP):
        head, scale = model.similarity_head, model.logit_scale
    elif isinstance(model, MultiGrainedSimilarity):
        head, scale = model, torch.tensor(0.0)  # scores without a logit scale (rankings are the same)
    else:
        raise TypeError(f"expected an XCLIP model or a MultiGrainedSimilarity head, got {type(model).__name__}")
    if logit_scale is not None:
        scale = torch.as_tensor(logit_scale)
    return head, scale.detach()


def _full(head: MultiGrainedSimilarity, scale: Tensor, text: TextFeatures, video: VideoFeatures, block: int) -> Tensor:
    """Multi-grained logits [a, b] in blocks of ``block`` texts and videos."""
    return head.blockwise(text, video, scale.to(text.word_emb.device), block, block)


def _coarse(head: MultiGrainedSimilarity, text: TextFeatures, video: VideoFeatures) -> Tensor:
    """The video-sentence score t W_g v [a, b] (one dot product per pair)."""
    w = head.global_mat_weight.detach()
    sentence = text.sentence_emb
    return (sentence.to(w.dtype) @ w).to(sentence.dtype) @ video.video_emb.to(sentence.dtype).t()


def _rank(head, scale, queries, gallery, k, shortlist, block, query_is_text: bool) -> tuple[Tensor, Tensor]:
    n_query, n_gallery = len(queries), len(gallery)
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1 or None, got {k}")
    k = n_gallery if k is None else min(k, n_gallery)
    shortlist = k if shortlist is None else max(k, min(shortlist, n_gallery))
    if k == n_gallery or shortlist == n_gallery:  # exact: score everything
        full = _full(head, scale, queries, gallery, block) if query_is_text else _full(head, scale, gallery, queries, block).t()
        scores, indices = full.sort(dim=1, descending=True, stable=True)
        return indices[:, :k], scores[:, :k]
    coarse = _coarse(head, queries, gallery) if query_is_text else _coarse(head, gallery, queries).t()  # [q, n]
    candidates = coarse.topk(shortlist, dim=1).indices  # [q, s]
    fine = []
    for i in range(n_query):  # each query re-ranks its own shortlist
        if query_is_text:
            fine.append(_full(head, scale, queries[i : i + 1], gallery[candidates[i]], block)[0])
        else:
            fine.append(_full(head, scale, gallery[candidates[i]], queries[i : i + 1], block)[:, 0])
    fine = torch.stack(fine)  # [q, s]
    scores, order = fine.sort(dim=1, descending=True, stable=True)
    return candidates.gather(1, order)[:, :k], scores[:, :k]


@torch.no_grad()
def rank_videos(model: XCLIP | MultiGrainedSimilarity, text: TextFeatures, video: VideoFeatures, k: int | None = None,
                shortlist: int | None = None, block: int = 256, logit_scale: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Videos for each text query, best first: ``(indices [q, k], scores [q, k])``.

    Coarse to fine: the video-sentence score shortlists ``shortlist`` videos per query (default ``k``),
    the full multi-grained score re-ranks them and the best ``k`` are returned. ``k=None`` (or a
    shortlist covering the gallery) scores every video: the exact ranking. A video outside the
    shortlist is never returned, so the result equals the exact top ``k`` whenever the exact top ``k``
    lies within the coarse top ``shortlist``; raise ``shortlist`` to trade speed for recall.

    ``model`` is an :class:`XCLIP` (scores are its logits) or a bare :class:`MultiGrainedSimilarity`
    head (scores without a logit scale unless ``logit_scale`` is given). ``block`` bounds the texts and
    videos scored together (memory).
    """
    head, scale = _head_and_scale(model, logit_scale)
    return _rank(head, scale, text, video, k, shortlist, block, query_is_text=True)


@torch.no_grad()
def rank_texts(model: XCLIP | MultiGrainedSimilarity, video: VideoFeatures, text: TextFeatures, k: int | None = None,
               shortlist: int | None = None, block: int = 256, logit_scale: float | Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Texts for each video query, best first: ``(indices [q, k], scores [q, k])``; coarse to fine as
    :func:`rank_videos`, with the roles of texts and videos swapped."""
    head, scale = _head_and_scale(model, logit_scale)
    return _rank(head, scale, video, text, k, shortlist, block, query_is_text=False)
