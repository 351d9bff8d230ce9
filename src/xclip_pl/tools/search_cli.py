"""``xclip-pl search``: rank the videos written by ``xclip-pl predict`` for a caption (or captions for a video)."""
from __future__ import annotations

from pathlib import Path

import torch

from xclip_pl.data.tokenizer import load_tokenizer
from xclip_pl.model.presets import PRESETS
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.tools.search import encode_query, load_embeddings, rank_texts, rank_videos


def search(embeddings: str, checkpoint: str, query: str | None = None, video_id: str | None = None, top: int = 5,
           shortlist: int | None = 100, tokenizer: str | None = None) -> list[list[dict]]:
    """Rank the videos of a ``predict`` output for caption queries, or its captions for one of its videos.

    Coarse to fine: the video-sentence score keeps ``shortlist`` candidates, the full X-CLIP score
    re-ranks them (``--shortlist null`` scores everything: the exact ranking).

    Args:
        embeddings: the directory ``xclip-pl predict`` wrote (``videos.safetensors``, ``texts.safetensors``, CSVs).
        checkpoint: the xclip-pl checkpoint (``.ckpt``) whose model produced them; it scores and encodes queries.
        query: a caption to search the videos for.
        video_id: a video id of the embeddings to find captions for.
        top: results shown per query.
        shortlist: candidates kept by the cheap video-sentence score; null scores every item (exact).
        tokenizer: tokenizer for caption queries (default: the run's ``tokenizer/`` beside the checkpoint
            folder, else the CLIP directory or hub id of the checkpoint).
    """
    if not query and video_id is None:
        raise ValueError("give --query CAPTION (videos for a caption) or --video_id ID (captions for a video)")
    module = XCLIPRetrieval.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    text, video, videos_df, texts_df = load_embeddings(embeddings)
    results = []
    if query:
        queries = encode_query(module.model, _tokenizer(checkpoint, module, tokenizer), query, module.model.max_words)
        indices, scores = rank_videos(module.model, queries, video, k=top, shortlist=shortlist)
        results.append(_show(f"videos for {query!r}", videos_df.iloc[indices[0].tolist()], scores[0]))
    if video_id is not None:
        rows = videos_df.index[videos_df.get("video_id", videos_df["video_index"].astype(str)) == video_id].tolist()
        if not rows:
            raise ValueError(f"video_id {video_id!r} is not in {embeddings}/videos.csv")
        indices, scores = rank_texts(module.model, video[rows[:1]], text, k=top, shortlist=shortlist)
        results.append(_show(f"captions for video {video_id!r}", texts_df.iloc[indices[0].tolist()], scores[0]))
    return results


def _tokenizer(checkpoint: str, module: XCLIPRetrieval, tokenizer: str | None):
    beside = Path(checkpoint).resolve().parent.parent / "tokenizer"
    source = tokenizer or (str(beside) if beside.is_dir() else None)
    clip = module.model.init_args["clip"]
    if source is None and clip is not None and clip not in PRESETS:
        source = clip
    if source is None:
        raise ValueError(f"no tokenizer for caption queries: none beside the checkpoint ({beside}); pass --tokenizer DIR "
                         "(the run's tokenizer directory)")
    return load_tokenizer(source)


def _show(title: str, rows, scores: torch.Tensor) -> list[dict]:
    records = [{"rank": r + 1, "score": float(s), **row} for r, (s, row) in enumerate(zip(scores, rows.to_dict("records")))]
    print(title)
    for record in records:
        shown = record.get("video_id", record.get("caption", record.get("video_index")))
        extra = record.get("caption") if "caption" in record and "video_id" not in record else record.get("path", "")
        print(f"  {record['rank']:>3}. {record['score']:8.3f}  {shown}  {extra if extra != shown else ''}")
    return records
