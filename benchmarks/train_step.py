"""Training-step throughput of X-CLIP (encode, multi-grained logits, symmetric InfoNCE, backward, AdamW)
on random data already on the device: the compute side of training, without data loading.

    python benchmarks/train_step.py --clip random-vit-b-32 --batch 128 --frames 12 --words 32 [--compile]

Prints a markdown table: clips/s, peak memory and MFU (a ViT-B/32 12-frame clip with its caption costs
~325 GFLOP forward + backward; PERFORMANCE.md puts the H100's ceiling at ~2,400 clips/s).
"""
from __future__ import annotations

import argparse
import time

import torch

from xclip_pl.model.xclip import XCLIP
from xclip_pl.module import XCLIPRetrieval
from xclip_pl.train.loss import symmetric_infonce

GFLOP_PER_CLIP = {"random-vit-b-32": 325.0}


def make_batch(batch: int, frames: int, words: int, size: int, vocab: int, device: str) -> dict:
    ids = torch.randint(1, vocab - 2, (batch, words), device=device)
    ids[:, 0], ids[:, words // 2] = vocab - 2, vocab - 1
    ids[:, words // 2 + 1 :] = 0
    return {"frames": torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, device=device),
            "frame_mask": torch.ones(batch, frames, dtype=torch.bool, device=device), "input_ids": ids,
            "attention_mask": (ids != 0).long()}


def step(module: XCLIPRetrieval, batch: dict, optimizer, dtype) -> None:
    with torch.autocast(batch["frames"].device.type, dtype=dtype, enabled=dtype != torch.float32):
        text, video = module.encode_text_batch(batch), module.encode_video_batch(batch)
        loss = symmetric_infonce(module.model.similarity(text, video))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = XCLIPRetrieval(XCLIP(args.clip, max_words=args.words, max_frames=args.frames)).to(device)
    if args.checkpointing:
        module.model.towers.clip.gradient_checkpointing_enable({"use_reentrant": False})
    size = module.image_size
    vocab = module.vocab_size
    batch = make_batch(args.batch, args.frames, args.words, size, vocab, device)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-5, fused=device == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    fn = torch.compile(step) if args.compile else step
    for _ in range(args.warmup):
        fn(module, batch, optimizer, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        fn(module, batch, optimizer, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    clips = args.batch / seconds
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    gflop = GFLOP_PER_CLIP.get(args.clip)
    return {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "clips/s": clips, "peak GiB": peak,
            "MFU (790 TFLOP/s)": clips * gflop / 790e3 if gflop else float("nan"), "ms/step": seconds * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default="random-vit-b-32")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--checkpointing", action="store_true")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    result = run(args)
    print("| device | clip | batch | frames/words | dtype | compile | ckpt | clips/s | ms/step | peak GiB | MFU |")
    print("|---|---|---:|---|---|---|---|---:|---:|---:|---:|")
    print(f"| {result['device']} | {args.clip} | {args.batch} | {args.frames}/{args.words} | {args.dtype} | {args.compile} | "
          f"{args.checkpointing} | {result['clips/s']:.0f} | {result['ms/step']:.1f} | {result['peak GiB']:.1f} | "
          f"{result['MFU (790 TFLOP/s)']:.1%} |")


if __name__ == "__main__":
    main()
