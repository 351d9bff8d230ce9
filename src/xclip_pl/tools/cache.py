"""``xclip-pl cache``: fill the decoded-frame cache of a recipe's datamodule before training.

The datamodule is built from the same config as ``fit`` (the CLI's parser: ``--config`` and any
``--data.init_args.*`` flag; the model is parsed, never built), its splits are read and checked as
``setup`` does, and every unique video of train / val / test goes once through the datamodule's own
:class:`~xclip_pl.data.cache.ClipLoader` (same cache directory, same key: file identity and every decoding
argument), so a training run with ``data.frame_cache: true`` reads each clip from the cache. Entries
already there are skipped; a changed file (size, mtime) or changed sampling arguments give new keys.
Entries are written atomically, so several workers, ranks or machines may fill one cache at once.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord

SPLITS = ("train", "val", "test")


@dataclass
class CacheReport:
    """What a fill did: videos ``cached`` now, ``already`` there, ``undecodable`` (``(path, error)``), the
    bytes of these videos' entries on disk, the wall time and the cache directory."""

    cache_dir: Path
    cached: int = 0
    already: int = 0
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    bytes_on_disk: int = 0
    seconds: float = 0.0

    @property
    def videos(self) -> int:
        return self.cached + self.already + len(self.undecodable)

    def summary(self) -> str:
        rate = self.videos / self.seconds if self.seconds > 0 else float("inf")
        decoded = self.cached / self.seconds if self.seconds > 0 else float("inf")
        lines = [f"frame cache {self.cache_dir}: {self.videos} videos, {self.cached} cached now, {self.already} already "
                 f"there, {len(self.undecodable)} undecodable; {self.bytes_on_disk / 2**30:.2f} GiB on disk "
                 f"({self.bytes_on_disk} bytes); {self.seconds:.1f} s, {rate:.1f} clips/s ({decoded:.1f} decoded/s)"]
        lines += [f"  undecodable: {path}: {error}" for path, error in self.undecodable[:20]]
        if len(self.undecodable) > 20:
            lines.append(f"  ... and {len(self.undecodable) - 20} more")
        return "\n".join(lines)


class _LastError:
    """Stands in for the loader's BadVideoLog: keeps the error of the video just tried."""

    def __init__(self) -> None:
        self.error = ""

    def record(self, path, video_id, error: str) -> None:
        self.error = error


class CacheFill(Dataset):
    """One item per video: ``(status, bytes, path, error)``, status ``cached`` / ``already`` / ``undecodable``.

    Decodes and writes the entry through ``loader`` unless a complete entry (both ``.npy`` files readable
    with the expected shapes) is already there. ``records`` may repeat a video (workers then race on one key;
    the atomic writes keep every entry whole)."""

    def __init__(self, loader: ClipLoader, records: list[VideoRecord]) -> None:
        self.loader, self.records = loader, records

    def __len__(self) -> int:
        return len(self.records)

    def _complete(self, record: VideoRecord) -> int | None:
        """Bytes of the record's entry if it is complete, else None (also for a file that cannot be stat'ed)."""
        loader = self.loader
        try:
            key = loader.cache_key(record)
            frames_path, mask_path = loader.entry_paths(key)
            if not mask_path.is_file():
                return None
            if loader.cache_format == "npy":  # the headers say it: no need to read the frames
                frames, mask = np.load(frames_path, mmap_mode="r"), np.load(mask_path, mmap_mode="r")
                whole = frames.shape == loader.frame_shape and mask.shape == (loader.max_frames,)
            else:  # a compressed entry is whole when it decodes to the clip's shape
                whole = loader.read_into(key, np.empty(loader.frame_shape, np.uint8)) is not None
            return frames_path.stat().st_size + mask_path.stat().st_size if whole else None
        except (OSError, ValueError):
            return None

    def __getitem__(self, index: int) -> tuple[str, int, str, str]:
        record = self.records[index]
        there = self._complete(record)
        if there is not None:
            return "already", there, str(record.path), ""
        self.loader.bad_log = _LastError()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # counted and listed in the report instead
            ok = self.loader.load(record)[2]
        if not ok:
            return "undecodable", 0, str(record.path), self.loader.bad_log.error
        size = self._complete(record)
        return "cached", size or 0, str(record.path), ""


def unique_videos(records: list[VideoRecord]) -> list[VideoRecord]:
    """The records with one per (file, start, end), first occurrence kept (a video shared by splits once)."""
    seen: set[tuple[str, float | None, float | None]] = set()
    unique = []
    for record in records:
        identity = (str(Path(record.path).resolve()), record.start, record.end)
        if identity not in seen:
            seen.add(identity)
            unique.append(record)
    return unique


def fill(loader: ClipLoader, records: list[VideoRecord], num_workers: int = 0, log_every: int = 200,
         progress: bool | None = None) -> CacheReport:
    """Decode every record through ``loader`` into its cache with ``num_workers`` processes; a tqdm bar on a
    terminal (``progress`` None: when stderr is one), else a line every ``log_every`` videos on stderr."""
    if loader.cache_dir is None:
        raise ValueError("fill needs a ClipLoader with a cache_dir")
    loader.strict = False  # an undecodable video is counted and listed, not fatal
    report = CacheReport(loader.cache_dir)
    data = DataLoader(CacheFill(loader, records), batch_size=None, num_workers=num_workers,
                      persistent_workers=False)
    progress = sys.stderr.isatty() if progress is None else progress
    bar = None
    if progress:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=len(records), unit="video", desc="frame cache", dynamic_ncols=True)
    start = time.perf_counter()
    for done, (status, size, path, error) in enumerate(data, 1):
        if status == "already":
            report.already += 1
        elif status == "cached":
            report.cached += 1
        else:
            report.undecodable.append((path, error))
        report.bytes_on_disk += int(size)
        if bar is not None:
            bar.update()
        elif log_every > 0 and (done % log_every == 0 or done == len(records)):
            elapsed = time.perf_counter() - start
            print(f"frame cache: {done}/{len(records)} videos ({report.cached} cached, {report.already} already there, "
                  f"{len(report.undecodable)} undecodable), {done / max(elapsed, 1e-9):.1f} clips/s",
                  file=sys.stderr, flush=True)
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - start
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xclip-pl cache",
        description="Fill the decoded-frame cache of a recipe's datamodule ahead of training: every unique video "
                    "of its splits is decoded once, with the datamodule's own frame sampling, into "
                    "data.frame_cache_dir (default <root>/.xclip_pl/frame_cache). The cache is filled even if the "
                    "config says data.frame_cache: false (this command turns it on); training reads it only with "
                    "data.init_args.frame_cache: true. Every other flag is passed to the config parser as for "
                    "`xclip-pl fit` (e.g. --data.init_args.root /data/msrvtt, --data.init_args.frame_cache_dir DIR). "
                    "Safe to run on several machines or ranks at once on one cache (atomic writes); entries "
                    "already there are skipped.",
        epilog="example: xclip-pl cache --config conf/msrvtt_vit_b32.yaml --data.init_args.root /data/msrvtt "
               "--num_workers 16")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="decoding processes (default: the config's data.init_args.num_workers; 0 = this process)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS),
                        help="splits whose videos are cached (default: train val test)")
    parser.add_argument("--log_every", type=int, default=200,
                        help="when stderr is not a terminal (no progress bar), a progress line every N videos")
    return parser


def build_datamodule(config_args: list[str]):
    """The datamodule of a ``fit``-style config (``--config`` files and flags), without building the model."""
    from jsonargparse._util import import_object  # noqa: PLC0415

    from xclip_pl.cli import ParseOnlyCLI, build_cli  # noqa: PLC0415  (the CLI imports tools lazily)

    cli = build_cli(config_args, run=False, cli_class=ParseOnlyCLI)
    data = cli.config.data
    if data is None or not data.get("class_path"):
        raise ValueError("the config names no datamodule: set data.class_path (e.g. with --config <recipe.yaml>)")
    init_args = data.get("init_args")
    kwargs = init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args or {})
    return import_object(data.class_path)(**kwargs)


def cache(args: list[str] | None = None) -> CacheReport:
    """``xclip-pl cache --config <recipe.yaml> [--num_workers N] [--splits ...] [--data.init_args.* ...]``."""
    options, config_args = _parser().parse_known_args(sys.argv[1:] if args is None else args)
    datamodule = build_datamodule(config_args)
    splits = tuple(options.splits)
    problems = datamodule._load_splits(splits, check_files=True)  # what setup() checks: annotations, files
    if problems:
        raise ValueError(datamodule._problem_report(problems))
    forced = not datamodule.frame_cache
    datamodule.frame_cache = True  # this command fills the cache whatever the config says
    loader = datamodule._clip_loader()
    records = unique_videos([r for split in splits for r in datamodule.records[split]])
    workers = datamodule.num_workers if options.num_workers is None else options.num_workers
    print(f"frame cache {loader.cache_dir}: {len(records)} videos of {'/'.join(splits)}, {loader.max_frames} frames of "
          f"{loader.image_size} px, {workers} workers", file=sys.stderr, flush=True)
    report = fill(loader, records, num_workers=workers, log_every=options.log_every)
    print(report.summary(), flush=True)
    if forced:
        print("note: the config has data.frame_cache: false; train with --data.init_args.frame_cache true to read "
              "this cache", flush=True)
    return report


cache.takes_cli_args = True  # xclip_pl.cli.main passes it the raw arguments (the config parser needs them)
