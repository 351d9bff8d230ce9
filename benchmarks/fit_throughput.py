"""The real ``xclip-pl fit`` path against the bare training step, and the loader's clips/s per worker.

PERFORMANCE.md asks that the real fit path (Trainer + datamodule + model) reaches >= 0.9x the bare training
step's clips/s on the same batches (CPU, tiny CLIP, same run), and that the loader gives >= 110 clips/s per
worker in the first epoch of an MSR-VTT-shaped set (20 captions per video, frame cache cold at the start,
12 frames from 15 s 30 fps clips). This script, in one process:

1. writes an MSR-VTT-format synthetic dataset with ``xclip_pl.data.synthetic.write_synthetic_msrvtt``
   (``--captions`` per video, ``--seconds`` at ``--rate`` fps, ``--width`` x ``--height``);
2. loader: the real ``MSRVTTDataModule`` with ``frame_cache: true`` (a fresh, cold cache directory per
   worker count), ``--loader-frames`` frames at ``--loader-image-size``; every pair of the training split,
   epoch after epoch, through its ``train_dataloader()`` (``--loader-workers`` workers, persistent, so worker
   start-up is in epoch 1); clips/s and clips/s per worker for epoch 1 (cold) and later epochs (warm);
3. fit: builds the app the way ``xclip-pl fit --config <yaml>`` does (``xclip_pl.cli.build_cli`` with
   ``run=False`` from a config written to a YAML in a temporary directory: the W&B logger (offline), the
   recipe callbacks, checkpointing, validation every epoch, gradient clipping, the real datamodule with its
   cold frame cache and ``--fit-workers`` workers, a ``--clip`` CLIP) and runs
   ``cli.trainer.fit(cli.model, datamodule=cli.datamodule)`` for ``--fit-epochs`` epochs. A callback times
   each training epoch from ``on_train_epoch_start`` to the last ``on_train_batch_end`` (loader restart,
   fetches, steps, logging, progress bar; validation and checkpointing come after and are not counted)
   and keeps the batches of epoch 2 (epoch 1 fills the cache);
4. bare: the same module's ``training_step`` + ``backward`` + gradient clipping + optimizer step (+ the
   logit-scale clamp fit does; not the schedule step, a few microseconds) with the trainer's own optimizer,
   on those epoch-2 batches already collated in memory, no loader, no Trainer (``self.log`` is a no-op with
   the trainer detached). One pass runs at the start of each fit epoch from epoch 3 on, before that epoch's
   timer starts and before Lightning restarts the loader (so its workers are idle): fit epochs and bare
   passes alternate, spreading a shared machine's load over both; the rest of ``--bare-passes`` run after fit.

The main process runs ``--threads`` torch threads (default 1: on a small machine shared with other jobs, two
OpenMP threads stall each other at every barrier and single runs swing by 10x; 0 keeps torch's default).
Prints markdown tables. CPU figures: only the ratio in one run means anything.

    python benchmarks/fit_throughput.py [--videos 32] [--batch-size 32] [--fit-workers 2] [--loader-workers 1,2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import yaml
from pytorch_lightning import Callback

from datamodules.msrvtt import MSRVTTDataModule
from xclip_pl.cli import build_cli
from xclip_pl.data.synthetic import write_synthetic_msrvtt

TARGET_RATIO = 0.9
TARGET_COLD_PER_WORKER = 110


def bare_pass(module, optimizer, clip_val: float | None, batches: list[dict]) -> dict:
    """One pass of the bare step over ``batches``: training_step, backward, clipping, optimizer step, clamp.

    The module is detached from its trainer for the pass, so ``self.log`` in ``training_step`` is a no-op
    (logging is part of what fit adds). The schedule is not stepped (a few microseconds; it would move the
    fit run's learning-rate schedule)."""
    trainer = module._trainer
    module.trainer = None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    module.train()
    clips, step_times, start = 0, [], time.perf_counter()
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            for index, batch in enumerate(batches):
                step_start = time.perf_counter()
                loss = module.training_step(batch, index)
                optimizer.zero_grad()
                loss.backward()
                if clip_val:
                    torch.nn.utils.clip_grad_norm_(params, clip_val)
                optimizer.step()
                module.on_train_batch_end(None, batch, index)
                clips += int(batch["frames"].shape[0])
                step_times.append(time.perf_counter() - step_start)
    finally:
        module.trainer = trainer
    return {"clips": clips, "seconds": time.perf_counter() - start, "steps": len(batches),
            "median_step": statistics.median(step_times)}


class FitVsBare(Callback):
    """Times each training epoch (start -> last training batch end) and keeps the batches of epoch 2.

    From epoch 3 on, before the epoch's timer starts (and before Lightning restarts the loader iterator, so
    the workers are idle), one bare pass runs over the epoch-2 batches: fit epochs and bare passes alternate,
    which spreads the load of a shared machine over both."""

    def __init__(self, keep_epoch: int = 1, max_bare: int = 4) -> None:
        self.keep_epoch, self.max_bare = keep_epoch, max_bare
        self.epochs: list[dict] = []
        self.bare: list[dict] = []
        self.batches: list[dict] = []
        self.order: list[tuple[str, dict]] = []  # ("fit" | "bare", row) in the order they ran

    def add_bare_pass(self, module, trainer) -> None:
        row = bare_pass(module, trainer.optimizers[0], trainer.gradient_clip_val, self.batches)
        self.bare.append(row)
        self.order.append(("bare", row))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > self.keep_epoch and self.batches and len(self.bare) < self.max_bare:
            self.add_bare_pass(pl_module, trainer)
        self._start, self._first_end, self._last_end, self._steps, self._clips = time.perf_counter(), None, None, 0, 0
        self._step_times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.keep_epoch:
            self.batches.append(batch)  # references only: fit does not modify its batches

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_end = time.perf_counter()
        if self._first_end is None:
            self._first_end = self._last_end
        if self._steps:
            self._step_times.append(self._last_end - self._previous_end)
        self._previous_end = self._last_end
        self._steps += 1
        self._clips += int(batch["frames"].shape[0])

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after validation: not counted
        if self._steps == 0:
            return
        self.epochs.append({"epoch": trainer.current_epoch + 1, "steps": self._steps, "clips": self._clips,
                            "seconds": self._last_end - self._start,
                            "steady": (self._last_end - self._first_end) / max(1, self._steps - 1),
                            "first_step": self._first_end - self._start,
                            "median_step": statistics.median(self._step_times) if self._step_times else float("nan")})
        if self.epochs[-1]["epoch"] > self.keep_epoch:
            self.order.append(("fit", self.epochs[-1]))


def write_dataset(args, root: Path) -> float:
    start = time.perf_counter()
    write_synthetic_msrvtt(root, num_train=args.videos, num_test=args.test_videos, captions_per_video=args.captions,
                           width=args.width, height=args.height, seconds=args.seconds, rate=args.rate, progress=False)
    return time.perf_counter() - start


def measure_loader(args, root: Path, tmp: Path, workers: int) -> list[dict]:
    """Epoch after epoch of the real training loader, cold frame cache at the start."""
    dm = MSRVTTDataModule(root=str(root), max_words=args.words, max_frames=args.loader_frames,
                          image_size=args.loader_image_size, batch_size=args.loader_batch_size, num_workers=workers,
                          frame_cache=True, frame_cache_dir=str(tmp / f"loader-cache-{workers}"))
    dm.setup("fit")
    loader = dm.train_dataloader()
    rows = []
    for epoch in range(args.loader_epochs):
        clips, start = 0, time.perf_counter()
        for batch in loader:
            clips += int(batch["frames"].shape[0])
        seconds = time.perf_counter() - start
        rows.append({"epoch": epoch + 1, "clips": clips, "seconds": seconds})
    del loader  # stops the persistent workers
    return rows


def fit_config(args, root: Path, tmp: Path) -> dict:
    """What a user's recipe holds (conf/synthetic.yaml, with a tiny CLIP and this benchmark's data)."""
    run_dir = str(tmp / "runs")
    logger = ({"class_path": "xclip_pl.loggers.XCLIPWandbLogger",
               "init_args": {"save_dir": run_dir, "project": "xclip-pl", "name": "fit-throughput", "offline": True}}
              if args.logger == "wandb" else False)
    return {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": args.fit_epochs, "gradient_clip_val": 1.0,
                    "log_every_n_steps": 10, "num_sanity_val_steps": 0, "default_root_dir": run_dir, "logger": logger,
                    "enable_progress_bar": not args.no_progress_bar,
                    "callbacks": [{"class_path": "xclip_pl.callbacks.examples.RetrievalExamples",
                                   "init_args": {"num_examples": 8}},
                                  {"class_path": "xclip_pl.callbacks.tokenizer.TokenizerCopy"},
                                  {"class_path": "xclip_pl.callbacks.bad_videos.BadVideoReport"}]},
        "model": {"model": {"class_path": "xclip_pl.model.xclip.XCLIP",
                            "init_args": {"clip": args.clip, "temporal_layers": 2, "temporal_init": "clip_text",
                                          "mask_padding": True, "frame_features": "clip"}},
                  "scheduler": {"class_path": "xclip_pl.train.schedules.WarmupCosine",
                                "init_args": {"warmup_ratio": 0.05}},
                  "lr": 0.001, "backbone_lr_scale": 1.0, "weight_decay": 0.05},
        "data": {"class_path": "datamodules.msrvtt.MSRVTTDataModule",
                 "init_args": {"root": str(root), "max_words": args.words, "max_frames": args.frames, "fps": 1.0,
                               "frame_sampling": "uniform", "image_size": args.fit_image_size,
                               "batch_size": args.batch_size, "eval_batch_size": 64, "num_workers": args.fit_workers,
                               "frame_cache": True, "frame_cache_dir": str(tmp / "fit-cache")}},
    }


def measure_fit_and_bare(args, root: Path, tmp: Path) -> tuple[list[dict], list[dict], int]:
    config = tmp / "fit_throughput.yaml"
    config.write_text(yaml.safe_dump(fit_config(args, root, tmp), sort_keys=False))
    cli = build_cli(["--config", str(config)], run=False)
    timer = FitVsBare(keep_epoch=1, max_bare=args.bare_passes)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    for _ in range(max(0, args.bare_passes - len(timer.bare))):  # the rest after fit
        timer.add_bare_pass(cli.model, cli.trainer)
    return timer.order, len(timer.batches)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_argument_group("synthetic MSR-VTT-format dataset")
    data.add_argument("--videos", type=int, default=32, help="training videos")
    data.add_argument("--captions", type=int, default=20, help="captions per video (MSR-VTT: 20)")
    data.add_argument("--test-videos", type=int, default=4, help="test videos (val = test, as MSR-VTT)")
    data.add_argument("--seconds", type=float, default=15.0)
    data.add_argument("--rate", type=int, default=30, help="frames per second of the written clips")
    data.add_argument("--width", type=int, default=320)
    data.add_argument("--height", type=int, default=240)
    data.add_argument("--words", type=int, default=32, help="max_words")
    loader = parser.add_argument_group("loader")
    loader.add_argument("--loader-workers", default="1,2", help="comma-separated worker counts ('' to skip)")
    loader.add_argument("--loader-frames", type=int, default=12)
    loader.add_argument("--loader-image-size", type=int, default=224)
    loader.add_argument("--loader-batch-size", type=int, default=32)
    loader.add_argument("--loader-epochs", type=int, default=3)
    fit = parser.add_argument_group("fit vs bare step")
    fit.add_argument("--clip", default="tiny", help="CLIP preset (tiny: 32 x 32 frames)")
    fit.add_argument("--fit-image-size", type=int, default=32, help="must match the CLIP preset")
    fit.add_argument("--frames", type=int, default=12, help="max_frames of the fit run")
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--fit-workers", type=int, default=2)
    fit.add_argument("--fit-epochs", type=int, default=5, help="epoch 1 fills the cache; epochs 2.. are timed")
    fit.add_argument("--bare-passes", type=int, default=4,
                     help="passes of the bare step over the epoch-2 batches: one before each fit epoch from 3 on, "
                          "the rest after fit")
    fit.add_argument("--threads", type=int, default=1,
                     help="torch threads of the main process (0: torch's default, one per core); 1 keeps a shared "
                          "machine's other jobs from stalling OpenMP barriers")
    fit.add_argument("--logger", choices=["wandb", "none"], default="wandb", help="wandb: the recipes' logger, offline")
    fit.add_argument("--no-progress-bar", action="store_true")
    fit.add_argument("--skip-fit", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "msrvtt"
        write_seconds = write_dataset(args, root)
        loader_rows = {int(w): measure_loader(args, root, tmp, int(w)) for w in args.loader_workers.split(",") if w}
        order, steps = ([], 0) if args.skip_fit else measure_fit_and_bare(args, root, tmp)
    load_after = os.getloadavg()

    pairs = args.videos * args.captions
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}: {os.cpu_count()} CPUs, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after; "
          f"{args.videos} training videos x {args.captions} captions = {pairs} pairs, {args.seconds:g} s at "
          f"{args.rate} fps, {args.width}x{args.height} H.264 (written in {write_seconds:.1f} s)\n")
    if loader_rows:
        print(f"Loader: `MSRVTTDataModule.train_dataloader()`, frame cache cold at epoch 1, {args.loader_frames} frames "
              f"of {args.loader_image_size}x{args.loader_image_size}, batches of {args.loader_batch_size}\n")
        print("| workers | epoch | cache | clips | s | clips/s | clips/s per worker | target per worker |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|")
        for workers, rows in loader_rows.items():
            for row in rows:
                rate = row["clips"] / row["seconds"]
                cold = row["epoch"] == 1
                target = f">= {TARGET_COLD_PER_WORKER}" if cold else ">= 125"
                print(f"| {workers} | {row['epoch']} | {'cold' if cold else 'warm'} | {row['clips']} | "
                      f"{row['seconds']:.2f} | {rate:.0f} | {rate / max(1, workers):.0f} | {target} |")
        print()
    fit_rows = [row for kind, row in order if kind == "fit"]
    bare_rows = [row for kind, row in order if kind == "bare"]
    if fit_rows and bare_rows:
        print(f"Fit vs bare step: CLIP `{args.clip}`, batch {args.batch_size}, {args.frames} frames of "
              f"{args.fit_image_size}x{args.fit_image_size}, {args.words} words, {steps} steps per epoch, fit with "
              f"{args.fit_workers} loader workers, logger {args.logger}, progress bar {not args.no_progress_bar}, "
              f"{torch.get_num_threads()} torch thread(s) in the main process\n")
        print("| run order | path | what was timed | steps | s | clips/s | first step ms | median ms/step |")
        print("|---:|---|---|---:|---:|---:|---:|---:|")
        passes = 0
        for k, (kind, row) in enumerate(order, 1):
            if kind == "fit":
                what, first = f"epoch {row['epoch']}: epoch start -> last batch end", f"{1e3 * row['first_step']:.0f}"
            else:
                passes += 1
                what, first = f"pass {passes} over the epoch-2 batches", "-"
            print(f"| {k} | {kind} | {what} | {row['steps']} | {row['seconds']:.2f} | "
                  f"{row['clips'] / row['seconds']:.0f} | {first} | {1e3 * row['median_step']:.1f} |")
        fit_rate = statistics.median(r["clips"] / r["seconds"] for r in fit_rows)
        fit_median = statistics.median(r["median_step"] for r in fit_rows)
        bare_median = statistics.median(r["median_step"] for r in bare_rows)
        fit_steady = statistics.median(args.batch_size / r["steady"] for r in fit_rows)
        bare_rate = statistics.median(r["clips"] / r["seconds"] for r in bare_rows)
        print("\n| summary (medians over epochs / passes) | fit | bare | fit / bare | target |")
        print("|---|---:|---:|---:|---:|")
        print(f"| clips/s, whole epoch (fit: epoch start -> last batch end) | {fit_rate:.1f} | {bare_rate:.1f} | "
              f"{fit_rate / bare_rate:.2f} | >= {TARGET_RATIO} |")
        print(f"| clips/s, fit without each epoch's first step | {fit_steady:.1f} | {bare_rate:.1f} | "
              f"{fit_steady / bare_rate:.2f} | |")
        print(f"| clips/s from the median step time | {args.batch_size / fit_median:.1f} | "
              f"{args.batch_size / bare_median:.1f} | {bare_median / fit_median:.2f} | |")


if __name__ == "__main__":
    main()
