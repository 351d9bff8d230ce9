"""Torch datasets over :class:`VideoRecord` lists: training pairs, evaluation videos, evaluation captions.

Every item carries global indices (``index`` / ``video_index`` / ``text_index``) so that evaluation can
drop the duplicates a distributed sampler pads with. Frames stay uint8 ``[F, H, W, 3]``; normalisation
happens on the device. An evaluation video that cannot be decoded gives zero frames, an all-False
``frame_mask``, ``video_ok=False`` and a warning naming the file; a training pair whose video cannot be
decoded is replaced by a pair of another video (:class:`TrainPairs`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord, caption_pairs
from xclip_pl.data.tokenizer import tokenize


class _TextMixin:
    """Lazy per-item tokenisation with the tokenizer object the dataset holds."""

    tokenizer: object
    max_words: int
    pad_id: int

    def _tokens(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = tokenize(self.tokenizer, [caption], self.max_words, self.pad_id)
        return ids[0], mask[0]  # [L], [L]


def _video_item(loader: ClipLoader, record: VideoRecord) -> dict:
    frames, mask, ok = loader.load(record)
    return {"frames": torch.from_numpy(frames), "frame_mask": torch.from_numpy(mask), "video_ok": ok}


def spread_stride(num_pairs: int) -> int:
    """A step near ``num_pairs`` / golden ratio sharing no factor with ``num_pairs``: stepping by it from any
    pair visits every pair once, and neighbouring pairs (one video's captions) land far apart."""
    stride = max(1, round(num_pairs * 0.6180339887))
    while int(np.gcd(stride, num_pairs)) != 1:
        stride += 1
    return stride


class TrainPairs(_TextMixin, Dataset):
    """One item per (video, caption) pair: every caption of every video (the reference's expanded pairs).

    Items: ``frames`` uint8 [F, S, S, 3], ``frame_mask`` bool [F], ``input_ids`` long [L],
    ``attention_mask`` long [L], ``index`` (pair index), ``video_index``, ``video_ok`` (always True).

    A pair whose video cannot be decoded is replaced by a pair of another, decodable video, so a batch
    never holds an empty clip. Each process (every DataLoader worker) remembers its undecodable videos in
    :attr:`bad_videos`: a bad file is decoded, warned about and logged once per worker, however many
    captions it has. With ``strict`` on the clip loader, the first bad video raises instead.

    Args:
        records: the training videos.
        tokenizer: a ``CLIPTokenizer`` (see :mod:`xclip_pl.data.tokenizer`).
        clip_loader: decodes (and caches) the frames.
        max_words: token slots L, SOT and EOT included.
        pad_id: id written after EOT (the reference uses 0).
    """

    def __init__(self, records: list[VideoRecord], tokenizer, clip_loader: ClipLoader, max_words: int,
                 pad_id: int = 0) -> None:
        self.records, self.tokenizer, self.loader = records, tokenizer, clip_loader
        self.max_words, self.pad_id = max_words, pad_id
        self.pairs = caption_pairs(records)
        self.stride = spread_stride(len(self.pairs))
        self.bad_videos: set[int] = set()  # video indices this process failed to decode

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        """The pair at ``index``; if its video cannot be decoded, the first pair of a decodable video among
        ``index + k * stride`` (k = 1, 2, ...): deterministic, and one bad video's captions are replaced by
        pairs spread over the data rather than all by the same pair."""
        for k in range(len(self.pairs)):
            pair_index = (index + k * self.stride) % len(self.pairs)
            video_index, caption = self.pairs[pair_index]
            if video_index in self.bad_videos:
                continue
            item = _video_item(self.loader, self.records[video_index])
            if item["video_ok"]:
                input_ids, attention_mask = self._tokens(caption)
                return {**item, "input_ids": input_ids, "attention_mask": attention_mask, "index": pair_index,
                        "video_index": video_index}
            self.bad_videos.add(video_index)
        raise self._nothing_decodable()

    def _nothing_decodable(self) -> RuntimeError:
        """The error once every training video failed: names the count and a few files."""
        bad = [self.records[v] for v in sorted(self.bad_videos)]
        shown = ", ".join(str(r.path) for r in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        return RuntimeError(f"none of the {len(bad)} training videos could be decoded ({shown}); the warnings "
                            "above give each file's error. Check the video files and the datamodule's root / "
                            "video directory")


class EvalVideos(Dataset):
    """One item per unique video: ``frames``, ``frame_mask``, ``video_index``, ``video_ok``.

    Args:
        records: the evaluation videos.
        clip_loader: decodes (and caches) the frames.
    """

    def __init__(self, records: list[VideoRecord], clip_loader: ClipLoader) -> None:
        self.records, self.loader = records, clip_loader

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return {**_video_item(self.loader, self.records[index]), "video_index": index}


class EvalCaptions(_TextMixin, Dataset):
    """One item per caption: ``input_ids``, ``attention_mask``, ``text_index``, ``video_index`` (its video).

    Args:
        records: the evaluation videos (captions are numbered in record order).
        tokenizer: a ``CLIPTokenizer``.
        max_words: token slots L, SOT and EOT included.
        pad_id: id written after EOT (the reference uses 0).
    """

    def __init__(self, records: list[VideoRecord], tokenizer, max_words: int, pad_id: int = 0) -> None:
        self.tokenizer, self.max_words, self.pad_id = tokenizer, max_words, pad_id
        self.pairs = caption_pairs(records)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        video_index, caption = self.pairs[index]
        input_ids, attention_mask = self._tokens(caption)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "text_index": index,
                "video_index": video_index}
