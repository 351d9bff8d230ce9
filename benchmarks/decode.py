"""Decode-speed benchmark: ``decode_clip`` against the reference loader's method and a naive loader.

Writes a 15 s, 30 fps, 320x240 H.264 clip (x264 defaults: keyint 250, B-frames) to a temporary
directory and times, on one decoder thread, how many clips per second each loader turns into
12 frames of 224x224:

* ours:      ``decode_clip(max_frames=12, image_size=224)`` (targets first, sequential decode, RGB only for kept frames);
* reference: the official OpenCV loader's method with PyAV: seek to every whole second, decode forward
             to that frame, RGB-convert, PIL bicubic resize + centre crop, then keep 12 (uniform);
* naive:     decode and RGB-convert every frame at full size, then keep 12 and resize + crop them.

Usage: ``python benchmarks/decode.py [--runs 9]``; prints a markdown table.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from xclip_pl.data.video import decode_clip, resize_center_crop, sample_frame_indices

MAX_FRAMES, IMAGE_SIZE = 12, 224
SECONDS, RATE, WIDTH, HEIGHT = 15, 30, 320, 240


def write_benchmark_clip(path: Path) -> Path:
    """15 s of moving, textured content, H.264 with x264's default GOP."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 24, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(SECONDS * RATE):
            phase = index / RATE
            pixels = np.stack([
                127 + 100 * np.sin(xs / 17.0 + 2.0 * phase),
                127 + 100 * np.sin(ys / 13.0 - 1.5 * phase),
                127 + 100 * np.sin((xs + ys) / 23.0 + phase),
            ], axis=-1).astype(np.uint8) + noise
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _open_single_thread(path: Path) -> tuple[av.container.InputContainer, av.VideoStream]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    return container, stream


def ours(path: Path) -> np.ndarray:
    return decode_clip(path, MAX_FRAMES, IMAGE_SIZE)[0]


def reference_seek(path: Path) -> np.ndarray:
    """Official method: one seek per whole second (frame index sec * int(fps)), all 1-fps frames, then slice."""
    container, stream = _open_single_thread(path)
    with container:
        fps = int(stream.average_rate)
        frame_count = stream.frames
        total_seconds = int(np.ceil(frame_count / fps))
        ticks_per_frame = 1 / (stream.average_rate * stream.time_base)
        kept = []
        for second in range(0, total_seconds + 1):
            index = second * fps
            if index >= frame_count:
                break
            target_pts = int(round(index * ticks_per_frame)) + (stream.start_time or 0)
            container.seek(target_pts, stream=stream, backward=True, any_frame=False)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target_pts:
                    kept.append(resize_center_crop(frame.to_image(), IMAGE_SIZE))
                    break
    return np.stack([kept[i] for i in sample_frame_indices(len(kept), MAX_FRAMES)])


def naive(path: Path) -> np.ndarray:
    """Decode and RGB-convert every frame at full size, then keep the 1-fps uniform 12 and resize them."""
    container, stream = _open_single_thread(path)
    with container:
        fps = int(stream.average_rate)
        all_frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    candidates = all_frames[::fps]
    return np.stack([resize_center_crop(Image.fromarray(candidates[i]), IMAGE_SIZE)
                     for i in sample_frame_indices(len(candidates), MAX_FRAMES)])


def median_seconds(loader: Callable[[Path], np.ndarray], path: Path, runs: int) -> float:
    loader(path)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        loader(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_benchmark_clip(Path(tmp) / "bench.mp4")
        with av.open(str(path)) as container:
            keyframes = sum(packet.is_keyframe for packet in container.demux(video=0) if packet.size)
        reference_frames = reference_seek(path)
        for name, loader in (("ours", ours), ("naive", naive)):
            diff = np.abs(loader(path).astype(int) - reference_frames.astype(int)).max()
            print(f"max |{name} - reference| pixel difference: {diff}")
        loaders = {"ours: decode_clip": ours, "reference: seek per second": reference_seek,
                   "naive: decode + RGB every frame": naive}
        seconds = {name: median_seconds(loader, path, args.runs) for name, loader in loaders.items()}
    print(f"\n{SECONDS} s, {RATE} fps, {WIDTH}x{HEIGHT} H.264 ({keyframes} keyframes); {MAX_FRAMES} frames at "
          f"{IMAGE_SIZE}x{IMAGE_SIZE}; 1 decoder thread; median of {args.runs} runs\n")
    print("| loader | ms / clip | clips / s | ours is faster by |")
    print("|---|---|---|---|")
    base = seconds["ours: decode_clip"]
    for name, value in seconds.items():
        print(f"| {name} | {1000 * value:.1f} | {1 / value:.1f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
