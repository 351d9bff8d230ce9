"""Frame-cache formats: bytes per clip, read clips/s per worker and pixel fidelity, side by side.

Candidates (each stores one clip ``uint8 [F, S, S, 3]``; all read back in this one process, what one DataLoader
worker does for a cached clip, files already in the page cache):

* ``npy``: raw uint8 ``.npy`` through :class:`~xclip_pl.data.cache.ClipLoader` (today's format, lossless);
* ``npy-into``: the same files read straight into a preallocated batch slot (``ClipLoader.read_into``, what the
  training loader does), no intermediate array;
* ``tar-shard``: raw frames of every clip concatenated in one hand-written tar (an index of offsets, one open
  file, ``seek`` + ``readinto``), the layout webdataset-style shards use; lossless;
* ``png``: one PNG strip per clip (PIL, ``compress_level`` 1), lossless;
* ``webp-lossless``: one lossless WebP per frame (PIL, ``method`` 0), lossless;
* ``jpeg-q95-444`` / ``jpeg-q90-420``: one JPEG strip per clip (PIL / libjpeg-turbo), LOSSY: the
  ``cache_format: jpeg`` switch of ``ClipLoader`` (``jpeg_quality``, 4:4:4 chroma) and a smaller variant.

Content changes compressed sizes, not raw ones. ``--content``: ``synthetic`` decodes the frames of the clips
``write_synthetic_msrvtt`` writes (flat background, two shapes: far easier to compress than real video);
``natural`` is a stand-in with natural-image statistics (a 1/f^2 power spectrum texture panning across the
frame, plus sensor noise of sigma 2 levels); ``random`` is uniform noise (incompressible, the worst case). No
real video is on the machine this was written on, so the real-video ratio is between ``natural`` and
``synthetic`` and must be checked on real data. Prints a table, and the disk MSR-VTT (10k videos, 12 frames)
and ActivityNet (20k videos, 64 frames) need.

Usage: ``python benchmarks/cache_read.py [--frames 12 64] [--content natural synthetic] [--clips 12] [--rounds 3]``.
"""
from __future__ import annotations

import argparse
import io
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from xclip_pl.data.cache import ClipLoader

DATASETS = {12: ("MSR-VTT", 10_000), 64: ("ActivityNet", 20_000)}


# ---- content ----------------------------------------------------------------------------------------------
def natural_clip(frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A 1/f^2-spectrum colour texture (natural-image statistics) panning 3 px a frame, plus noise of sigma 2."""
    side = size + 3 * frames + 8
    fy, fx = np.meshgrid(np.fft.fftfreq(side), np.fft.fftfreq(side), indexing="ij")
    amplitude = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / side)
    planes = []
    for _ in range(3):
        phase = np.exp(2j * np.pi * rng.random((side, side)))
        plane = np.real(np.fft.ifft2(amplitude * phase))
        planes.append((plane - plane.mean()) / plane.std())
    texture = np.clip(128 + 40 * np.stack(planes, -1), 0, 255)
    out = np.stack([texture[3 * f: 3 * f + size, 2 * f: 2 * f + size] for f in range(frames)])
    return np.clip(out + rng.normal(0, 2, out.shape), 0, 255).astype(np.uint8)


def synthetic_clips(frames: int, size: int, clips: int, directory: Path) -> list[np.ndarray]:
    """Decoded frames of ``write_synthetic_msrvtt`` clips (15 s, 30 fps, 320x240; 1 fps candidates)."""
    from xclip_pl.data.synthetic import write_synthetic_msrvtt
    from xclip_pl.data.video import decode_clip

    seconds = max(15, frames)
    root = write_synthetic_msrvtt(directory / "videos", num_train=clips, num_test=0, captions_per_video=1,
                                  width=320, height=240, seconds=seconds, rate=30, progress=False)
    return [decode_clip(path, frames, size)[0] for path in sorted((root / "videos" / "all").glob("*.mp4"))]


def make_clips(content: str, frames: int, size: int, clips: int, directory: Path) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if content == "synthetic":
        return synthetic_clips(frames, size, clips, directory)
    if content == "natural":
        return [natural_clip(frames, size, rng) for _ in range(clips)]
    return [rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8) for _ in range(clips)]


# ---- candidates: write(clips, directory) -> read(index) -> frames -----------------------------------------
def _strip(clip: np.ndarray) -> Image.Image:
    return Image.fromarray(clip.reshape(-1, *clip.shape[2:]))


def _unstrip(image: Image.Image, shape: tuple[int, ...]) -> np.ndarray:
    return np.asarray(image.convert("RGB")).reshape(shape)


def npy_loader(clips: list[np.ndarray], directory: Path, into: bool) -> Callable[[int], np.ndarray]:
    frames, size = clips[0].shape[:2]
    loader = ClipLoader(frames, size, cache_dir=directory)
    mask = np.ones(frames, bool)
    for index, clip in enumerate(clips):
        loader._write_cache(f"c{index}", clip, mask)
    if not into:
        return lambda index: loader._read_cache(f"c{index}")[0]
    slot = np.empty_like(clips[0])

    def read(index: int) -> np.ndarray:
        loader.read_into(f"c{index}", slot)
        return slot
    return read


def tar_loader(clips: list[np.ndarray], directory: Path) -> Callable[[int], np.ndarray]:
    path = directory / "shard-000000.tar"
    with tarfile.open(path, "w") as tar:
        for index, clip in enumerate(clips):
            info = tarfile.TarInfo(f"c{index}.frames.u8")
            info.size = clip.nbytes
            tar.addfile(info, io.BytesIO(clip.tobytes()))
    with tarfile.open(path) as tar:
        offsets = {int(m.name[1:].split(".")[0]): m.offset_data for m in tar.getmembers()}
    handle = open(path, "rb")  # noqa: SIM115 (one open shard, as a shard reader keeps it)
    shape = clips[0].shape

    def read(index: int) -> np.ndarray:
        out = np.empty(shape, np.uint8)
        handle.seek(offsets[index])
        handle.readinto(memoryview(out).cast("B"))
        return out
    return read


def image_loader(clips: list[np.ndarray], directory: Path, kind: str) -> Callable[[int], np.ndarray]:
    shape = clips[0].shape
    for index, clip in enumerate(clips):
        if kind == "png":
            _strip(clip).save(directory / f"c{index}.png", compress_level=1)
        elif kind == "webp-lossless":
            for f, frame in enumerate(clip):
                Image.fromarray(frame).save(directory / f"c{index}.{f}.webp", lossless=True, method=0)
        else:  # jpeg-q<quality>-<444|420>
            quality, chroma = int(kind.split("-")[1][1:]), kind.split("-")[2]
            _strip(clip).save(directory / f"c{index}.jpg", quality=quality, subsampling=0 if chroma == "444" else 2)

    def read(index: int) -> np.ndarray:
        if kind == "webp-lossless":
            return np.stack([np.asarray(Image.open(directory / f"c{index}.{f}.webp").convert("RGB"))
                             for f in range(shape[0])])
        suffix = "png" if kind == "png" else "jpg"
        with Image.open(directory / f"c{index}.{suffix}") as image:
            return _unstrip(image, shape)
    return read


CANDIDATES = ["npy", "npy-into", "tar-shard", "png", "webp-lossless", "jpeg-q95-444", "jpeg-q90-420"]


def build(name: str, clips: list[np.ndarray], directory: Path) -> Callable[[int], np.ndarray]:
    if name in ("npy", "npy-into"):
        return npy_loader(clips, directory, into=name == "npy-into")
    if name == "tar-shard":
        return tar_loader(clips, directory)
    return image_loader(clips, directory, name)


def measure(name: str, clips: list[np.ndarray], rounds: int, directory: Path) -> dict:
    """Bytes per clip, median-of-rounds read clips/s, largest and mean pixel error against the stored clip."""
    read = build(name, clips, directory)
    total = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    errors = [np.abs(read(i).astype(np.int16) - clips[i]) for i in range(len(clips))]  # also warms the page cache
    error, mean_error = max(int(e.max()) for e in errors), float(np.mean([e.mean() for e in errors]))
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        for index in range(len(clips)):
            read(index)
        rates.append(len(clips) / (time.perf_counter() - start))
    return {"bytes": total / len(clips), "rate": statistics.median(rates), "error": error, "mean_error": mean_error}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 64])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--content", nargs="+", default=["natural", "synthetic"],
                        choices=["natural", "synthetic", "random"])
    parser.add_argument("--formats", nargs="+", default=CANDIDATES, choices=CANDIDATES)
    parser.add_argument("--clips", type=int, default=12, help="clips written and read per frame count and content")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the clips (median reported)")
    parser.add_argument("--dir", default=None, help="where the candidates are written (default: a temporary dir)")
    args = parser.parse_args(argv)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M')}: one process (= one worker); files in the page cache (warm); "
          f"{args.clips} clips per row, median of {args.rounds} passes\n")
    print("| frames x px | content | format | lossless | bytes per clip | vs raw | read clips/s per worker | "
          "max / mean pixel error | dataset | disk |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for frames in args.frames:
        name, videos = DATASETS.get(frames, ("-", 0))
        for content in args.content:
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                clips = make_clips(content, frames, args.image_size, args.clips, Path(tmp))
            raw = None
            for fmt in args.formats:
                with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                    row = measure(fmt, clips, args.rounds, Path(tmp))
                raw = raw or row["bytes"]
                disk = f"{videos * row['bytes'] / 1e9:.1f} GB" if videos else "-"
                print(f"| {frames} x {args.image_size} | {content} | {fmt} | {'yes' if row['error'] == 0 else 'NO'} | "
                      f"{row['bytes']:,.0f} | {row['bytes'] / raw:.2f} | {row['rate']:.0f} | {row['error']} / {row['mean_error']:.2f} | "
                      f"{name} | {disk} |")


if __name__ == "__main__":
    main()
