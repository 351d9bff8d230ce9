"""``VideoTextDataModule``: every dataset-independent data argument, validation, tokenizer and loaders.

A dataset plugin (``datamodules/*.py``) subclasses it and implements only :meth:`load_records`, which parses
the annotation files into records, and, for clear errors, :meth:`required_paths`. The base does the rest the
same way for every dataset: it finds each record's video under ``video_dir`` (:meth:`locate_video`), leaves
out videos without captions, drops or reports missing videos (``missing_videos``) and validates the splits
(:mod:`xclip_pl.data.records`). Training yields one batch of (video, caption) pairs; val,
test and predict yield a LIST of two loaders, ``[videos, captions]``, so each video is encoded once.

Default cache locations (``<cache>`` = ``<root>/.xclip_pl`` when ``root`` is writable, otherwise
``~/.cache/xclip_pl/<hash of root>``): the offline tokenizer in ``<cache>/tokenizers/bpe<V>-<hash>/``,
decoded frames in ``<cache>/frame_cache/``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from xclip_pl.data.arguments import check_data_numbers
from xclip_pl.data.bad_videos import BadVideoLog
from xclip_pl.data.cache import CacheFormat, ClipLoader
from xclip_pl.data.dataset import EvalCaptions, EvalVideos, TrainPairs, collate
from xclip_pl.data.files import VideoIndex, default_cache_dir
from xclip_pl.data.records import (
    MissingVideos,
    VideoRecord,
    drop_missing_videos,
    drop_videos_without_captions,
    examples,
    find_record_problems,
    problem_report,
)
from xclip_pl.data.resumable import resumable_loader
from xclip_pl.data.tokenizer import (
    CLEANING_VERSION,
    load_tokenizer,
    save_tokenizer,
    tokenize,
    train_bpe_tokenizer,
)

Split = Literal["train", "val", "test"]
STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",),
    None: ("train", "val", "test"),
}

class VideoTextDataModule(pl.LightningDataModule):
    """Base class of the text-video datamodules: subclasses implement :meth:`load_records`.

    Args:
        root: the dataset directory (annotation files and videos, laid out as the subclass expects).
        max_words: token slots per caption, SOT and EOT included (reference: 32; 64 for paragraphs).
        max_frames: frames per clip; shorter clips are padded and masked (reference: 12; 64 for long videos).
        fps: candidate frames per second before ``max_frames`` of them are kept (reference: 1).
        frame_sampling: which candidates to keep when there are too many: evenly spread, first or last.
        frame_times: which frames are the candidates. ``timestamps``: the frames shown at ``start + k / fps``
            seconds (variable-frame-rate safe). ``reference``: the reference's OpenCV arithmetic, frame
            indices ``sec * int(fps_video)`` for whole seconds ``sec`` (29.97 fps counts as 29, so its
            "seconds" drift; window times truncated to whole seconds); needs a whole ``fps`` (reference).
        color_matrix: YUV -> RGB conversion. ``tagged``: the matrix and range the video is tagged with (right
            colours for BT.709 HD video); ``bt601``: BT.601 whatever the tag, as OpenCV (reference). The same
            on untagged videos.
        resize: how frames are resized to ``image_size`` (bicubic, short side, then centre crop). ``torch``:
            torch's antialiased bicubic, PIL's filter (within 2 levels of PIL's bytes, ~6x faster);
            ``swscale``: swscale's bicubic on the RGB planes (~0.25 levels from PIL's on average, up to ~10 at
            sharp edges); ``pil``: PIL's bicubic, the reference's bytes (reference).
        image_size: square frame side after resize and centre crop (must match the vision tower).
        batch_size: training pairs per device and step (the contrastive batch is this times the devices).
        eval_batch_size: videos or captions per device and step in val / test / predict.
        num_workers: DataLoader worker processes per device (0 = decode in the main process); the
            evaluation captions loader uses at most one.
        tokenizer: a CLIP tokenizer directory or hub id; None trains the offline BPE on the training captions.
        tokenizer_dir: cache directory of the offline BPE (one subdirectory per vocabulary size and caption
            hash); None = ``<root>/.xclip_pl/tokenizers`` (or ``~/.cache/xclip_pl/...`` if root is read-only).
        tokenizer_vocab_size: largest vocabulary of the offline BPE, specials included (>= 514; at most the
            text tower's vocabulary).
        pad_token_id: id written after EOT (the reference pads with 0).
        frame_cache: keep decoded clips on disk (``frame_cache_format``) and reuse them (keyed by file identity and decoding args).
        frame_cache_dir: where the frame cache lives when ``frame_cache`` is on; None =
            ``<root>/.xclip_pl/frame_cache`` (or ``~/.cache/xclip_pl/...`` if root is read-only).
        frame_cache_format: how cached clips are stored. ``npy``: raw uint8, the decoded pixels exactly (reads
            in well under a millisecond; 1.8 MiB per clip at 12 frames of 224 px); ``jpeg``: LOSSY JPEG strips at
            quality 95 with full chroma, about half the disk on natural video and 25-90x slower reads; for
            disk-bound sets such as ActivityNet at 64 frames (benchmarks/cache_read.py measures both).
        strict: stop at the first video that cannot be decoded (missing, empty, truncated, not a video).
            False (default): such a training pair is replaced by a pair of another video, such an evaluation
            video is scored as a miss, a warning names the file, and every bad file is logged under
            ``<default_root_dir>/bad_videos/`` (the ``BadVideoReport`` callback lists them at the end).
        missing_videos: videos named in the annotations but not on disk. ``error``: stop with one message
            listing them (per split); ``skip``: leave them out with a warning, as the reference does.
    """

    #: the directory of the videos, relative to ``root`` (or absolute); plugins set it from their ``video_dir``.
    video_dir: str = "."
    #: whether :meth:`locate_video` searches the subdirectories of ``video_dir`` for a record's ``search`` names.
    search_video_subdirectories: ClassVar[bool] = True

    def __init__(
        self,
        root: str,
        max_words: int = 32,
        max_frames: int = 12,
        fps: float = 1.0,
        frame_sampling: Literal["uniform", "head", "tail"] = "uniform",
        frame_times: Literal["timestamps", "reference"] = "timestamps",
        color_matrix: Literal["tagged", "bt601"] = "tagged",
        resize: Literal["torch", "swscale", "pil"] = "torch",
        image_size: int = 224,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        num_workers: int = 4,
        tokenizer: str | None = None,
        tokenizer_dir: str | None = None,
        tokenizer_vocab_size: int = 1000,
        pad_token_id: int = 0,
        frame_cache: bool = False,
        frame_cache_dir: str | None = None,
        frame_cache_format: CacheFormat = "npy",
        strict: bool = False,
        missing_videos: MissingVideos = "error",
    ) -> None:
        super().__init__()
        check_data_numbers(max_words=max_words, max_frames=max_frames, fps=fps, image_size=image_size,
                           batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
                           tokenizer_vocab_size=tokenizer_vocab_size, pad_token_id=pad_token_id)
        self.save_hyperparameters()  # every init argument, subclasses' included (checkpoint, loggers, CLI checks)
        self.root = Path(root).expanduser()
        self.max_words, self.max_frames, self.fps = max_words, max_frames, fps
        self.frame_sampling, self.image_size = frame_sampling, image_size
        if frame_times == "reference" and float(fps) != int(fps):
            raise ValueError(f"data.fps: {fps} with data.frame_times: reference; the reference's arithmetic samples a "
                             "whole number of frames per second: set data.fps to an integer (reference: 1) or "
                             "data.frame_times: timestamps")
        self.frame_times, self.color_matrix, self.resize = frame_times, color_matrix, resize
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.tokenizer_source, self.tokenizer_dir = tokenizer, tokenizer_dir
        self.tokenizer_vocab_size, self.pad_token_id = tokenizer_vocab_size, pad_token_id
        self.frame_cache, self.frame_cache_dir, self.frame_cache_format = frame_cache, frame_cache_dir, frame_cache_format
        self.strict, self.missing_videos = strict, missing_videos
        self._video_index: VideoIndex | None = None  # built on first lookup (plugins set video_dir after __init__)
        self.bad_video_log: BadVideoLog | None = None
        self.tokenizer = None  # a transformers.CLIPTokenizer once setup() ran
        self.records: dict[str, list[VideoRecord]] = {}  # split -> records, once loaded and checked
        self._checked: set[str] = set()  # splits whose video files were checked too
        self._missing_files: dict[str, int] = {}  # split -> its video files not on disk, at its last failed check
        self._datasets: dict[str, Dataset | tuple[Dataset, Dataset]] = {}

    # ---- what a dataset plugin implements ---------------------------------------------------------
    def load_records(self, split: Split) -> list[VideoRecord]:
        """The videos of ``split`` with their captions, as the annotation files list them: each record's
        ``path`` relative to ``video_dir`` (or absolute) and, optionally, ``search`` names to look for there
        (see :meth:`locate_video`); files need not exist, videos may lack captions: the base class handles both."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_records(split)")

    def required_paths(self, split: Split) -> list[tuple[str, Path]]:
        """``(description, path)`` of the files and directories ``load_records(split)`` reads; each missing
        one is reported (and ``load_records`` not called) instead of failing inside the parser."""
        return []

    # ---- video files ----------------------------------------------------------------------------
    @property
    def video_root(self) -> Path:
        """``root / video_dir``: where records' relative paths and ``search`` names are resolved."""
        return self.root / Path(self.video_dir).expanduser()

    def locate_video(self, record: VideoRecord) -> VideoRecord:
        """A copy of ``record`` whose ``path`` is its video file: the first of its ``search`` names found under
        :attr:`video_root` (in its subdirectories too if ``search_video_subdirectories``), else ``path`` there."""
        found = None
        if record.search:
            if self._video_index is None:
                self._video_index = VideoIndex(self.video_root, recursive=self.search_video_subdirectories)
            found = self._video_index.find(record.search)
        return replace(record, path=found or self.video_root / record.path)

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Load and validate the splits ``stage`` needs, build the tokenizer and the datasets."""
        if stage not in STAGE_SPLITS:
            raise ValueError(f"unknown stage {stage!r}; expected one of {[s for s in STAGE_SPLITS if s]}")
        splits = STAGE_SPLITS[stage]
        caption_only = ("train",) if self._needs_offline_tokenizer() and "train" not in splits else ()
        problems = self._load_splits(splits, check_files=True) + self._load_splits(caption_only, check_files=False)
        if problems:
            raise ValueError(self._problem_report(problems))
        self._build_tokenizer()
        self._start_bad_video_log()
        for split in splits:
            if split not in self._datasets:
                self._datasets[split] = self._build_datasets(split)

    def _start_bad_video_log(self) -> None:
        """A fresh per-rank log of undecodable videos under the run directory (``<root_dir>/bad_videos/``), started
        empty at the first setup; later setups of the same run (``fit`` then its test) add to it, so the report
        at the end lists every bad file of the run."""
        trainer = self.trainer
        run_dir = Path(trainer.default_root_dir) if trainer is not None else default_cache_dir(self.root, "runs")
        log = BadVideoLog(run_dir / "bad_videos", rank=trainer.global_rank if trainer else 0)
        if self.bad_video_log is None or self.bad_video_log.path != log.path:
            self.bad_video_log = log
            self._datasets.clear()  # datasets built earlier hold a loader with another log
            self.bad_video_log.reset()

    def _needs_offline_tokenizer(self) -> bool:
        return self.tokenizer is None and self.tokenizer_source is None

    def _load_splits(self, splits: tuple[str, ...], check_files: bool) -> list[tuple[str, str]]:
        """Load and check each split (once); ``(split, problem)`` for everything wrong with them.
        ``check_files=False`` (training captions for the tokenizer only) skips the video-file checks."""
        problems: list[tuple[str, str]] = []
        for split in splits:
            if split in (self._checked if check_files else self.records):
                continue
            records, found = self._read_split(split)
            self._missing_files.pop(split, None)
            if records is not None:
                found += find_record_problems(records, check_files=check_files)
                if check_files and found:
                    self._missing_files[split] = sum(not Path(r.path).is_file() for r in records)
            problems += [(split, problem) for problem in found]
            if not found:
                self.records[split] = records
                if check_files:
                    self._checked.add(split)
        return problems

    def _read_split(self, split: str) -> tuple[list[VideoRecord] | None, list[str]]:
        """The split's records (already loaded or from :meth:`load_records`), or None and the problems."""
        if split in self.records:
            return self.records[split], []
        missing = [f"{what} not found: {path}" for what, path in self.required_paths(split) if not Path(path).exists()]
        if missing:
            return None, missing
        try:
            parsed = self.load_records(split)
        except ValueError as error:  # the parsers' own messages name the file (and line)
            return None, [f"could not read the annotations: {error}"]
        except (KeyError, OSError) as error:
            return None, [f"could not read the annotations: {type(error).__name__}: {error}"]
        if parsed and not any(r.captions for r in parsed):  # nothing to leave out: the annotations do not match
            return None, [f"{len(parsed)} videos have no caption: {examples([r.video_id for r in parsed])} (none "
                          "of the split has one: do the annotation files belong together?)"]
        where = f"{type(self).__name__} [{split}]"
        records = drop_videos_without_captions([self.locate_video(r) for r in parsed], where)
        return drop_missing_videos(records, self.missing_videos, where), []

    def _problem_report(self, problems: list[tuple[str, str]]) -> str:
        """One message for all problems (see :func:`~xclip_pl.data.records.problem_report`)."""
        return problem_report(f"{type(self).__name__}(root={str(self.root)!r})", problems, self._missing_files,
                              f"{type(self).__module__}.{type(self).__name__}")

    # ---- tokenizer ------------------------------------------------------------------------------
    def _build_tokenizer(self) -> None:
        """Load the configured tokenizer, or the offline BPE (trained once per caption set, then cached)."""
        if self.tokenizer is not None:
            return
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # quiet and safe in forked DataLoader workers
        if self.tokenizer_source is not None:
            self.tokenizer = load_tokenizer(self.tokenizer_source)
            return
        captions = [c for record in self.records["train"] for c in record.captions]
        out_dir = self.offline_tokenizer_dir(captions)
        if (out_dir / "vocab.json").is_file() and (out_dir / "merges.txt").is_file():
            self.tokenizer = load_tokenizer(out_dir)
        else:
            self.tokenizer = train_bpe_tokenizer(captions, out_dir, self.tokenizer_vocab_size)

    def offline_tokenizer_dir(self, captions: list[str]) -> Path:
        """``<tokenizer_dir>/bpe<V>-<hash of the captions and the cleaning>``: a new caption set, or a change in
        how captions are cleaned before BPE (``CLEANING_VERSION``), trains a new tokenizer."""
        digest = hashlib.sha256("\n".join([CLEANING_VERSION, *captions]).encode()).hexdigest()[:16]
        base = Path(self.tokenizer_dir) if self.tokenizer_dir else default_cache_dir(self.root, "tokenizers")
        return base / f"bpe{self.tokenizer_vocab_size}-{digest}"

    def caption_bank(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and masks [n, max_words] of up to ``size`` training captions, spread evenly over the
        train split (the query bank of QB-Norm); the training videos are not needed."""
        problems = self._load_splits(("train",), check_files=False)
        if problems:
            raise ValueError(self._problem_report(problems))
        self._build_tokenizer()
        captions = [c for record in self.records["train"] for c in record.captions]
        chosen = captions[:: max(1, len(captions) // max(1, size))][:size]
        return tokenize(self.tokenizer, chosen, self.max_words, self.pad_token_id)

    @property
    def predict_records(self) -> list[VideoRecord] | None:
        """The records behind ``predict_dataloader()`` (the test split), or None before setup."""
        return self.records.get("test")

    @property
    def vocab_size(self) -> int | None:
        """Number of token ids of the tokenizer (None before setup)."""
        return None if self.tokenizer is None else len(self.tokenizer)

    def save_tokenizer(self, out_dir: str | Path) -> Path:
        """Write the tokenizer as ``vocab.json`` + ``merges.txt`` into ``out_dir`` (e.g. the run directory);
        ``tokenizer: <out_dir>`` loads it back."""
        if self.tokenizer is None:
            raise RuntimeError(f"{type(self).__name__}.save_tokenizer: call setup() first, no tokenizer yet")
        return save_tokenizer(self.tokenizer, out_dir)

    # ---- datasets and loaders ------------------------------------------------------------------
    def _clip_loader(self) -> ClipLoader:
        cache = None
        if self.frame_cache:
            cache = Path(self.frame_cache_dir) if self.frame_cache_dir else default_cache_dir(self.root, "frame_cache")
        return ClipLoader(self.max_frames, self.image_size, self.fps, self.frame_sampling, cache, self.strict,
                          self.bad_video_log, frame_times=self.frame_times, color_matrix=self.color_matrix,
                          resize=self.resize, cache_format=self.frame_cache_format)

    def _build_datasets(self, split: str) -> Dataset | tuple[Dataset, Dataset]:
        records = self.records[split]
        if split == "train":
            return TrainPairs(records, self.tokenizer, self._clip_loader(), self.max_words, self.pad_token_id)
        return (EvalVideos(records, self._clip_loader()),
                EvalCaptions(records, self.tokenizer, self.max_words, self.pad_token_id))

    def _dataset(self, split: str, stage: str):
        if split not in self._datasets:
            raise RuntimeError(f"{type(self).__name__}: no {split!r} data; call setup({stage!r}) first")
        return self._datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, train: bool = False, num_workers: int | None = None
                ) -> DataLoader:
        """Training: a ``StatefulDataLoader`` (:func:`~xclip_pl.data.resumable.resumable_loader`) whose position,
        shuffle generator and worker RNGs are saved in checkpoints, so a mid-epoch resume continues at the next
        batch; evaluation: a plain ``DataLoader`` (an interrupted evaluation is redone)."""
        workers = self.num_workers if num_workers is None else num_workers
        make = resumable_loader if train else DataLoader
        return make(dataset, batch_size=batch_size, shuffle=train, drop_last=train, num_workers=workers,
                    persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                    collate_fn=collate)  # a batch read into one buffer is not copied again

    def train_dataloader(self) -> DataLoader:
        """Shuffled (video, caption) pairs with ``drop_last`` (equal per-rank batches for the gather)."""
        dataset = self._dataset("train", "fit")
        if len(dataset) < self.batch_size:
            raise ValueError(f"the train split has {len(dataset)} pairs, fewer than batch_size={self.batch_size}: "
                             "with drop_last there would be no batch; lower batch_size")
        return self._loader(dataset, self.batch_size, train=True)

    def _eval_loaders(self, split: str, stage: str) -> list[DataLoader]:
        videos, captions = self._dataset(split, stage)
        text_workers = min(self.num_workers, 1)  # tokenising is cheap: one worker keeps it off the main process
        return [self._loader(videos, self.eval_batch_size),
                self._loader(captions, self.eval_batch_size, num_workers=text_workers)]

    def eval_video_frames(self, split: Split, video_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames uint8 [F, S, S, 3] and ``frame_mask`` bool [F] of video ``video_index`` of an evaluation
        split, as its loader gives them (frame cache included); e.g. for retrieval thumbnails."""
        item = self._dataset(split, "validate" if split == "val" else split)[0][video_index]
        return item["frames"].numpy(), item["frame_mask"].numpy()

    def eval_caption(self, split: Split, text_index: int) -> str:
        """The caption ``text_index`` of an evaluation split (the ``text_index`` its loader gives)."""
        return self._dataset(split, "validate" if split == "val" else split)[1].pairs[text_index][1]

    def eval_video_id(self, split: Split, video_index: int) -> str:
        """The dataset's id of video ``video_index`` of an evaluation split."""
        return self.records[split][video_index].video_id

    def val_dataloader(self) -> list[DataLoader]:
        """``[videos_loader, captions_loader]`` of the val split (in order, nothing dropped)."""
        return self._eval_loaders("val", "validate")

    def test_dataloader(self) -> list[DataLoader]:
        """``[videos_loader, captions_loader]`` of the test split (in order, nothing dropped)."""
        return self._eval_loaders("test", "test")

    def predict_dataloader(self) -> list[DataLoader]:
        """``[videos_loader, captions_loader]`` of the test split (in order, nothing dropped)."""
        return self._eval_loaders("test", "predict")
