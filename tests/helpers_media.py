"""Tiny real video files for tests, written with PyAV."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}


def make_frames(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, h, w, 3]: a flat colour per video (from ``seed``) with a bright bar that moves over time."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = rng.integers(30, 200, size=3, dtype=np.uint8)
    for i in range(num_frames):
        x = (i * 4) % max(1, width - 4)
        frames[i, :, x : x + 4] = 255
    return frames


def write_video(path: str | Path, num_frames: int = 16, width: int = 64, height: int = 48, rate: int = 8,
                seed: int = 0, codec: str | None = None) -> Path:
    """Write a small video (codec from the suffix: mp4 -> libx264, webm -> VP9, avi -> mpeg4); even sizes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or CODECS[path.suffix]
    with av.open(str(path), mode="w") as container:
        options = {"preset": "ultrafast"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = rate
        for image in make_frames(num_frames, width, height, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush, or the last frames are lost
            container.mux(packet)
    return path
