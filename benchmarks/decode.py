"""Decode-speed benchmark: ``decode_clip`` against the reference loader's method, a naive loader and the cache.

Writes a 15 s, 30 fps, 320x240 H.264 clip (MSR-VTT's shape; x264 defaults: keyint 250, B-frames) to a
temporary directory and times, on one decoder thread, how many clips per second each loader turns into
12 frames of 224x224:

* ours:             ``decode_clip(max_frames=12, image_size=224)`` with its defaults (target timestamps first,
                    sequential decode skipping non-reference frames no target needs and jumping to keyframes, RGB
                    only for the kept frames, then torch's antialiased bicubic resize of them in one batch);
* ours, swscale resize: the same with ``resize="swscale"`` (swscale's bicubic, frame by frame);
* ours, PIL resize: the same with ``resize="pil"`` (the reference's resize, byte-identical pixels);
* ours, paper recipe: the paper recipes' data switches (``frame_times="reference"``, ``color_matrix="bt601"``,
                    ``resize="pil"``), what their cold pass decodes;
* reference:        the official OpenCV loader's method with PyAV: seek to every whole second, decode forward
                    to that frame, RGB-convert, PIL bicubic resize + centre crop, then keep 12 (uniform);
* naive:            decode and RGB-convert every frame at full size, then keep 12 and resize + crop them;
* cache hit:        ``ClipLoader.load`` of the same clip from a warm frame cache (``.npy`` in the page cache).

Each round times every loader once, in turn (so a change in machine load hits all of them alike); the table
gives the median over rounds. Pixel differences are against the reference method's frames, in levels of 255.

Usage: ``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/decode.py [--runs 9]`` (one core); prints markdown
tables.
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
import torch
from PIL import Image

from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord
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


def ours_swscale_resize(path: Path) -> np.ndarray:
    return decode_clip(path, MAX_FRAMES, IMAGE_SIZE, resize="swscale")[0]


def ours_pil_resize(path: Path) -> np.ndarray:
    return decode_clip(path, MAX_FRAMES, IMAGE_SIZE, resize="pil")[0]


def ours_paper_recipe(path: Path) -> np.ndarray:
    """The paper recipes' data switches (conf/*_vit_b*.yaml)."""
    return decode_clip(path, MAX_FRAMES, IMAGE_SIZE, frame_times="reference", color_matrix="bt601", resize="pil")[0]


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


def cache_hit_loader(cache_dir: Path) -> Callable[[Path], np.ndarray]:
    """``ClipLoader.load`` (decode_clip's defaults) through a frame cache that already holds the clip."""
    loader = ClipLoader(MAX_FRAMES, IMAGE_SIZE, cache_dir=cache_dir)

    def cache_hit(path: Path) -> np.ndarray:
        frames, _, ok = loader.load(VideoRecord("bench", path, ["a caption"]))
        assert ok
        return frames

    return cache_hit


def median_seconds_interleaved(loaders: dict[str, Callable[[Path], np.ndarray]], path: Path,
                               runs: int) -> dict[str, float]:
    """Median seconds per call of each loader; every round calls each loader once, in turn, after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for loader in loaders.values():
        loader(path)  # warm-up (and it fills the cache for the cache-hit loader)
    for _ in range(runs):
        for name, loader in loaders.items():
            start = time.perf_counter()
            loader(path)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def pixel_differences(loaders: dict[str, Callable[[Path], np.ndarray]], path: Path) -> None:
    """Mean and max absolute difference (levels of 255) of each loader's frames from the reference method's."""
    reference_frames = reference_seek(path).astype(int)
    print("| loader | mean abs diff vs reference method | max abs diff | values > 1 level apart |")
    print("|---|---|---|---|")
    for name, loader in loaders.items():
        difference = np.abs(loader(path).astype(int) - reference_frames)
        print(f"| {name} | {difference.mean():.3f} | {difference.max()} | {100 * (difference > 1).mean():.2f} % |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (every loader once per round)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core, as in a DataLoader worker (torch resizes the kept frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_benchmark_clip(Path(tmp) / "bench.mp4")
        with av.open(str(path)) as container:
            keyframes = sum(packet.is_keyframe for packet in container.demux(video=0) if packet.size)
        loaders = {"ours: decode_clip (defaults)": ours, "ours, resize=swscale": ours_swscale_resize,
                   "ours, resize=pil": ours_pil_resize,
                   "ours, paper-recipe switches": ours_paper_recipe, "reference: seek per second": reference_seek,
                   "naive: decode + RGB every frame": naive, "cache hit: ClipLoader.load": cache_hit_loader(Path(tmp))}
        print(f"{SECONDS} s, {RATE} fps, {WIDTH}x{HEIGHT} H.264 ({keyframes} keyframes); {MAX_FRAMES} frames at "
              f"{IMAGE_SIZE}x{IMAGE_SIZE}; 1 decoder thread\n")
        pixel_differences({name: loader for name, loader in loaders.items() if "reference:" not in name}, path)
        seconds = median_seconds_interleaved(loaders, path, args.runs)
    print(f"\nmedian of {args.runs} interleaved rounds\n")
    print("| loader | ms / clip | clips / s | ours (defaults) is faster by |")
    print("|---|---|---|---|")
    base = seconds["ours: decode_clip (defaults)"]
    for name, value in seconds.items():
        print(f"| {name} | {1000 * value:.2f} | {1 / value:.1f} | {value / base:.2f}x |")
    reference, cache = seconds["reference: seek per second"], seconds["cache hit: ClipLoader.load"]
    print(f"\nours (defaults) vs the reference method: {reference / base:.2f}x (target >= 5x)")
    print(f"ours, paper-recipe switches vs the reference method: {reference / seconds['ours, paper-recipe switches']:.2f}x")
    print(f"cache hit vs ours (defaults): {base / cache:.1f}x (target >= 20x)")


if __name__ == "__main__":
    main()
