"""Training throughput through ``xclip-pl fit``'s Trainer path, and the loader from a warm frame cache.

PERFORMANCE.md's training targets hold *through* ``xclip-pl fit``: ViT-B/32 (random init), 12 frames, 32 words,
full X-CLIP heads, one H100 -> >= 1,300 clips/s at batch 128 within 40 GiB; the memory-saving mode: batch 256 in
<= 20 GiB at >= 900 clips/s. And the warm-cache loader never the bottleneck (here: 12 workers >= 1,300 clips/s).
Three subcommands, each printing one markdown row (and writing it as JSON with ``--json``):

``prepare``: writes a synthetic MSR-VTT-format dataset (``write_synthetic_msrvtt``, ``--videos`` x
``--captions``) and the run's config overrides ``<root>/bench.yaml`` (data root, batch, workers, a random CLIP
preset, one device, no logger, no validation). The same file then fills the frame cache:
``xclip-pl cache --config conf/msrvtt_vit_b32.yaml --config <root>/bench.yaml``.

``fit``: builds the app as ``xclip-pl fit --config conf/msrvtt_vit_b32.yaml --config conf/overlays/fast.yaml
--config <root>/bench.yaml`` does (``build_cli(run=False)``: bf16-mixed, fused AdamW, ``model.compile``, gradient
clipping, the recipe's callbacks and checkpointing, the real datamodule reading the warm cache with its workers)
and runs ``trainer.fit`` for ``--warmup + --steps`` steps. :class:`StepTimer` synchronises the device at the end of
step ``--warmup`` (compilation and the loader's start are before it) and after the last step, and reads the peak
device memory of the timed steps. ``--checkpointing`` adds ``--model.model.init_args.activation_checkpointing true`` (every CLIP
encoder layer recomputed in the backward pass, non-reentrant).

``loader``: the datamodule's ``train_dataloader()`` (``--workers``, batch ``--batch-size``), warm cache, no model:
clips/s over ``--batches`` batches after the first ``--skip`` (worker start-up).

``--smoke`` on any subcommand: CPU, the ``tiny`` CLIP at 32 px, 3 frames, 16 words, no compile, tiny data, so the
whole chain runs anywhere in a minute (figures meaningless).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from pytorch_lightning import Callback

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "conf" / "msrvtt_vit_b32.yaml"
FAST = REPO / "conf" / "overlays" / "fast.yaml"
GFLOP_PER_CLIP = 325.0  # ViT-B/32, 12 frames + caption, forward + backward (PERFORMANCE.md)
PEAK_TFLOPS = 790.0  # dense bf16 on an H100 / H200 (PERFORMANCE.md, KINDS.md)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(Callback):
    """Wall time and peak device memory of training steps ``warmup + 1 .. warmup + steps`` (data waits included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: float | None = None
        self.end: float | None = None
        self.clips = 0
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:  # the warm-up's last step has just finished
            _sync(pl_module.device)
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)
            self.start = time.perf_counter()
        elif self.start is not None:
            self.clips += int(batch["frames"].shape[0])
            self.steps += 1
            _sync(pl_module.device)
            self.end = time.perf_counter()

    def result(self, device: torch.device) -> dict:
        seconds = (self.end or 0.0) - (self.start or 0.0)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        rate = self.clips / seconds if seconds > 0 else float("nan")
        return {"steps": self.steps, "clips": self.clips, "seconds": seconds, "clips_per_s": rate, "peak_gib": peak,
                "mfu": rate * GFLOP_PER_CLIP * 1e9 / (PEAK_TFLOPS * 1e12)}


def _sizes(smoke: bool) -> dict:
    if smoke:
        return {"clip": "tiny", "image_size": 32, "frames": 3, "words": 16}
    return {"clip": "random-vit-b-32", "image_size": 224, "frames": 12, "words": 32}


def bench_config(args) -> dict:
    """Overrides of the recipe (+ fast overlay) for this benchmark: data, sizes, one device, nothing else logged."""
    sizes = _sizes(args.smoke)
    return {
        "trainer": {"accelerator": "cpu" if args.smoke else "gpu", "devices": 1, "num_nodes": 1, "strategy": "auto",
                    "logger": False, "limit_val_batches": 0, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": str(Path(args.root) / "runs")},
        "model": {"model": {"init_args": {"clip": sizes["clip"]}}},
        "data": {"init_args": {"root": str(args.root), "max_words": sizes["words"], "max_frames": sizes["frames"],
                               "image_size": sizes["image_size"], "batch_size": args.batch_size,
                               "num_workers": args.workers, "frame_cache": True}},
        "test_after_fit": False,
    }


def prepare(args) -> dict:
    from xclip_pl.data.synthetic import write_synthetic_msrvtt  # noqa: PLC0415

    root = Path(args.root)
    start = time.perf_counter()
    write_synthetic_msrvtt(root, num_train=args.videos, num_test=args.test_videos, captions_per_video=args.captions,
                           width=args.width, height=args.height, seconds=args.seconds, rate=args.rate, progress=False)
    (root / "bench.yaml").write_text(yaml.safe_dump(bench_config(args), sort_keys=False))
    return {"what": "prepare", "videos": args.videos, "pairs": args.videos * args.captions,
            "seconds": time.perf_counter() - start, "config": str(root / "bench.yaml")}


def fit(args) -> dict:
    from xclip_pl.cli import build_cli  # noqa: PLC0415

    flags = ["--config", str(RECIPE), "--config", str(FAST), "--config", str(Path(args.root) / "bench.yaml"),
             "--data.init_args.batch_size", str(args.batch_size), "--data.init_args.num_workers", str(args.workers),
             "--trainer.max_steps", str(args.warmup + args.steps), "--trainer.max_epochs", "1000"]
    if args.smoke:
        flags += ["--model.compile", "false"]
    if args.checkpointing:
        flags += ["--model.model.init_args.activation_checkpointing", "true"]
    cli = build_cli(flags, run=False)
    timer = StepTimer(args.warmup)
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    row = timer.result(cli.model.device)
    if args.checkpointing and not cli.model.model.towers.clip.vision_model.encoder.gradient_checkpointing:
        raise RuntimeError("--checkpointing: the CLIP vision encoder's activation checkpointing is off")
    return {"what": "fit", "batch": args.batch_size, "checkpointing": args.checkpointing, "workers": args.workers,
            "precision": str(cli.trainer.precision), "compile": bool(cli.model.hparams.compile),
            "device": torch.cuda.get_device_name() if cli.model.device.type == "cuda" else "cpu", **row}


def loader(args) -> dict:
    from xclip_pl.tools.cache import build_datamodule  # noqa: PLC0415

    dm = build_datamodule(["--config", str(RECIPE), "--config", str(Path(args.root) / "bench.yaml"),
                           "--data.init_args.batch_size", str(args.batch_size),
                           "--data.init_args.num_workers", str(args.workers)])
    dm.setup("fit")
    clips, start, total = 0, None, args.skip + args.batches
    batches = 0
    while batches < total:
        for batch in dm.train_dataloader():
            batches += 1
            if batches == args.skip:
                start = time.perf_counter()
            elif batches > args.skip:
                clips += int(batch["frames"].shape[0])
            if batches == total:
                break
    seconds = time.perf_counter() - start
    return {"what": "loader", "workers": args.workers, "batch": args.batch_size, "batches": args.batches,
            "clips": clips, "seconds": seconds, "clips_per_s": clips / seconds}


def _row(result: dict) -> str:
    if result["what"] == "prepare":
        return f"| prepare | {result['videos']} videos, {result['pairs']} pairs | {result['seconds']:.1f} s |"
    if result["what"] == "loader":
        return (f"| loader, warm cache | {result['workers']} workers, batch {result['batch']}, {result['clips']} clips | "
                f"{result['clips_per_s']:.0f} clips/s |")
    mode = ", activation checkpointing" if result["checkpointing"] else ""
    gpu = f", peak {result['peak_gib']:.1f} GiB, MFU {100 * result['mfu']:.0f} %" if result["device"] != "cpu" else ""
    return (f"| xclip-pl fit | batch {result['batch']}{mode}, {result['precision']}, compile {result['compile']}, "
            f"{result['steps']} timed steps, {result['device']} | {result['clips_per_s']:.0f} clips/s{gpu} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["prepare", "fit", "loader"])
    parser.add_argument("--root", required=True, help="dataset directory (prepare writes it)")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny CLIP and sizes: checks the chain, not speed")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=12, help="loader workers")
    parser.add_argument("--json", default=None, help="also write the result here")
    data = parser.add_argument_group("prepare")
    data.add_argument("--videos", type=int, default=200)
    data.add_argument("--captions", type=int, default=20, help="captions per video (MSR-VTT: 20)")
    data.add_argument("--test-videos", type=int, default=4)
    data.add_argument("--seconds", type=float, default=12.0, help="12 s at fps 1 gives the 12 frames")
    data.add_argument("--rate", type=int, default=10)
    data.add_argument("--width", type=int, default=160)
    data.add_argument("--height", type=int, default=120)
    timing = parser.add_argument_group("fit / loader")
    timing.add_argument("--warmup", type=int, default=15, help="fit: untimed steps (compilation, loader start)")
    timing.add_argument("--steps", type=int, default=30, help="fit: timed steps")
    timing.add_argument("--checkpointing", action="store_true", help="fit: activation checkpointing of the CLIP layers")
    timing.add_argument("--skip", type=int, default=5, help="loader: untimed first batches")
    timing.add_argument("--batches", type=int, default=40, help="loader: timed batches")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "disabled")
    result = {"prepare": prepare, "fit": fit, "loader": loader}[args.command](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(_row(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
