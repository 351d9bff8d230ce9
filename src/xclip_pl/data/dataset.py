"""Torch datasets over :class:`VideoRecord` lists: training pairs, evaluation videos, evaluation captions.

Every item carries global indices (``index`` / ``video_index`` / ``text_index``) so that evaluation can
drop the duplicates a distributed sampler pads with. Frames stay uint8 ``[F, H, W, 3]``; normalisation
happens on the device. An evaluation video that cannot be decoded gives zero frames, an all-False
``frame_mask``, ``video_ok=False`` and a warning naming the file; a training pair whose video cannot be
decoded is replaced by a pair of another video (:class:`TrainPairs`).

Batches: :class:`TrainPairs` and :class:`EvalVideos` have ``__getitems__`` (which ``DataLoader`` calls with a
whole batch's indices): the batch's frames are read straight from the frame cache into one ``[B, F, S, S, 3]``
buffer (in shared memory inside a DataLoader worker, so nothing is copied to hand it to the main process), a
video that appears twice in a batch is read once, and captions are tokenised in one call. Their items are
views of that buffer; :func:`collate` returns the buffer itself instead of stacking a copy (it falls back to
``default_collate`` for anything else). Same items, same batches as per-item ``dataset[i]``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

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


def batch_buffer(size: int, frame_shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 ``[size, *frame_shape]`` batch: in shared memory inside a DataLoader worker (what
    ``default_collate`` would allocate there, so the batch goes to the main process without a copy)."""
    shape = (size, *frame_shape)
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, shape)


def _whole_batch(frames: list[torch.Tensor]) -> torch.Tensor | None:
    """The ``[B, ...]`` tensor ``frames`` are consecutive views of (exactly its whole storage), or None."""
    first = frames[0]
    storage, numel = first.untyped_storage(), first.numel()
    if storage.nbytes() != len(frames) * numel * first.element_size():
        return None
    for k, clip in enumerate(frames):
        if (clip.untyped_storage().data_ptr() != storage.data_ptr() or not clip.is_contiguous()
                or clip.storage_offset() != k * numel or clip.shape != first.shape):
            return None
    return first.new_empty(0).set_(storage, 0, (len(frames), *first.shape))


def collate(items: list[dict]) -> dict:
    """``default_collate``, except that frames which are consecutive views of one batch buffer (the items of
    ``__getitems__``) are returned as that buffer rather than copied into a new one."""
    if not items or not isinstance(items[0], dict) or "frames" not in items[0]:
        return default_collate(items)
    frames = _whole_batch([item["frames"] for item in items])
    if frames is None:
        return default_collate(items)
    rest = default_collate([{k: v for k, v in item.items() if k != "frames"} for item in items])
    return {"frames": frames, **rest}


class _BatchReads:
    """Reads a batch's clips into one buffer, each video once: ``read(out_slot, record_index, out)``."""

    def __init__(self, loader: ClipLoader, records: list[VideoRecord], frames: torch.Tensor) -> None:
        self.loader, self.records, self.frames = loader, records, frames
        self.read: dict[int, tuple[int, torch.Tensor, bool]] = {}  # video index -> (slot, mask, ok)

    def __call__(self, slot: int, video_index: int) -> tuple[torch.Tensor, bool]:
        """Fill ``frames[slot]`` with the video's clip; ``(frame_mask, ok)``."""
        if video_index in self.read:
            first, mask, ok = self.read[video_index]
            self.frames[slot] = self.frames[first]
            return mask, ok
        mask, ok = self.loader.load_into(self.records[video_index], self.frames[slot].numpy())
        self.read[video_index] = (slot, torch.from_numpy(mask), ok)
        return self.read[video_index][1], ok


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
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The items of ``indices`` (the same as ``[self[i] for i in indices]``), read as one batch: frames
        are views of one buffer (see :func:`collate`), each video read once, captions tokenised together."""
        frames = batch_buffer(len(indices), self.loader.frame_shape)
        reads = _BatchReads(self.loader, self.records, frames)
        chosen = [self._decodable_pair(index, slot, reads) for slot, index in enumerate(indices)]
        input_ids, attention_mask = tokenize(self.tokenizer, [self.pairs[p][1] for p, _ in chosen], self.max_words,
                                             self.pad_id)
        return [{"frames": frames[slot], "frame_mask": mask, "video_ok": True, "input_ids": input_ids[slot],
                 "attention_mask": attention_mask[slot], "index": pair_index,
                 "video_index": self.pairs[pair_index][0]}
                for slot, (pair_index, mask) in enumerate(chosen)]

    def _decodable_pair(self, index: int, slot: int, reads: _BatchReads) -> tuple[int, torch.Tensor]:
        """``(pair index, frame mask)`` of the first pair of a decodable video among ``index + k * stride``, its
        clip read into ``slot``."""
        for k in range(len(self.pairs)):
            pair_index = (index + k * self.stride) % len(self.pairs)
            video_index = self.pairs[pair_index][0]
            if video_index in self.bad_videos:
                continue
            mask, ok = reads(slot, video_index)
            if ok:
                return pair_index, mask
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

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """``[self[i] for i in indices]``, read into one batch buffer (see :func:`collate`)."""
        frames = batch_buffer(len(indices), self.loader.frame_shape)
        reads = _BatchReads(self.loader, self.records, frames)
        items = []
        for slot, index in enumerate(indices):
            mask, ok = reads(slot, index)
            items.append({"frames": frames[slot], "frame_mask": mask, "video_ok": ok, "video_index": index})
        return items


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
