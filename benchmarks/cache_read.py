"""Frame-cache footprint and warm read rate: bytes per clip and clips/s per reading process.

Writes ``--clips`` entries of ``F`` frames at ``S`` px through :class:`~xclip_pl.data.cache.ClipLoader`'s own
writer (raw uint8 ``.npy``: the frames and the mask), then reads them back ``--rounds`` times in this one
process (what one DataLoader worker does for a cached clip, before collate) with the files in the page cache
(warm). The content does not change the size of raw ``.npy`` files, so random frames stand in for decoded ones.
Prints a table, and the disk that MSR-VTT (10k videos, 12 frames) and ActivityNet (20k videos, 64 frames) need.

Usage: ``python benchmarks/cache_read.py [--frames 12 64] [--image-size 224] [--clips 48] [--rounds 3]``.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xclip_pl.data.cache import ClipLoader

DATASETS = {12: ("MSR-VTT", 10_000), 64: ("ActivityNet", 20_000)}


def measure(frames: int, size: int, clips: int, rounds: int, directory: Path) -> tuple[int, float]:
    """(bytes per clip, warm clips/s in one process)."""
    loader = ClipLoader(frames, size, cache_dir=directory)
    rng = np.random.default_rng(0)
    keys = [f"bench{frames}x{size}-{i}" for i in range(clips)]
    mask = np.ones(frames, bool)
    for key in keys:
        loader._write_cache(key, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8), mask)
    per_clip = sum(p.stat().st_size for p in directory.glob(f"bench{frames}x{size}-0.*.npy"))
    for key in keys:  # warm the page cache
        loader._read_cache(key)
    start = time.perf_counter()
    for _ in range(rounds):
        for key in keys:
            assert loader._read_cache(key) is not None
    return per_clip, rounds * clips / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 64])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--clips", type=int, default=48, help="cache entries written and read per frame count")
    parser.add_argument("--rounds", type=int, default=3, help="warm passes over the entries timed")
    parser.add_argument("--dir", default=None, help="cache directory (default: a temporary one)")
    args = parser.parse_args(argv)
    print(f"\n{time.strftime('%Y-%m-%d')}: one process; raw uint8 .npy entries (frames + mask), warm page cache\n")
    print("| frames x px | bytes per clip | MiB per clip | warm read clips/s per worker | MiB/s | dataset | disk |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for frames in args.frames:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            per_clip, rate = measure(frames, args.image_size, args.clips, args.rounds, Path(tmp))
        name, videos = DATASETS.get(frames, ("-", 0))
        disk = f"{videos * per_clip / 1e9:.1f} GB ({videos:,} videos)" if videos else "-"
        print(f"| {frames} x {args.image_size} | {per_clip:,} | {per_clip / 2**20:.2f} | {rate:.0f} | "
              f"{rate * per_clip / 2**20:.0f} | {name} | {disk} |")


if __name__ == "__main__":
    main()
