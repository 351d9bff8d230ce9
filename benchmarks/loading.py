"""Data-loading benchmark: training pairs per second from one loader process, frame cache cold and warm.

PERFORMANCE.md asks that data loading with the decoded-frame cache warm is never the bottleneck:
>= 2,000 clips/s from 16 workers, i.e. >= 125 clips/s per worker, measured per worker on CPU. This
script writes a small synthetic MSR-VTT-format dataset (the embedded default's generator), builds the
real datamodule with ``frame_cache: true`` at 12 frames of 224 x 224, and times, in this one process
(``num_workers=0``, which is what each DataLoader worker does):

* cold: every training pair once, decoding its clip (and writing the cache);
* warm items: ``dataset[i]`` from the cache (frames + mask .npy, tokenisation);
* warm batches: a shuffled ``DataLoader`` with the default collate (what a worker hands the trainer).

Usage: ``python benchmarks/loading.py [--videos 64] [--batch-size 32] [--batches 20]``; prints a table.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from datamodules.synthetic import SyntheticDataModule

TARGET_PER_WORKER = 2000 / 16


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=64, help="synthetic training videos (each with several captions)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=20, help="warm batches timed")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--root", default=None, help="dataset directory (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a DataLoader worker runs single-threaded
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or Path(tmp) / "synthetic")
        dm = SyntheticDataModule(root=str(root), num_train=args.videos, num_test=4, max_frames=args.frames,
                                 image_size=args.image_size, frame_cache=True, frame_cache_dir=str(Path(tmp) / "cache"),
                                 batch_size=args.batch_size, num_workers=0)
        dm.setup("fit")
        dataset = dm.train_dataloader().dataset
        pairs = len(dataset)

        start = time.perf_counter()
        for index in range(pairs):
            dataset[index]
        cold = time.perf_counter() - start

        start = time.perf_counter()
        for index in range(pairs):
            dataset[index]
        warm_items = time.perf_counter() - start

        loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=0)
        batches, clips = 0, 0
        start = time.perf_counter()
        while batches < args.batches:
            for batch in loader:
                clips += batch["frames"].shape[0]
                batches += 1
                if batches == args.batches:
                    break
        warm_batches = time.perf_counter() - start
    mib = args.frames * args.image_size**2 * 3 / 2**20
    print(f"\n{time.strftime('%Y-%m-%d')}: one process, 1 torch thread; {pairs} training pairs of {args.videos} "
          f"synthetic videos; {args.frames} frames of {args.image_size}x{args.image_size} ({mib:.2f} MiB uint8 per clip)\n")
    print("| what | clips/s per worker | x 16 workers (if it scaled linearly) | target per worker |")
    print("|---|---:|---:|---:|")
    for name, count, seconds in (("cold: decode + write cache", pairs, cold), ("warm: dataset[i] from cache", pairs, warm_items),
                                 (f"warm: DataLoader batches of {args.batch_size} (collate)", clips, warm_batches)):
        target = "-" if name.startswith("cold") else f">= {TARGET_PER_WORKER:.0f}"
        print(f"| {name} | {_rate(count, seconds)} | {16 * count / seconds:.0f} | {target} |")


if __name__ == "__main__":
    main()
