"""``frame_times="reference"``: the frames the reference's OpenCV loader reads (xclip-method.md 8.1, 7.4, 7.5).

OpenCV reports ``int(fps)`` frames a "second" (29.97 fps -> 29) and seeks by frame index, so the reference
reads frame ``sec * int(fps)`` for every whole second ``sec`` of a whole-second window, up to
``ceil(frame_count / int(fps))``. At integer frame rates these are the frames of the timestamp path in
:mod:`xclip_pl.data.video`; at 29.97 fps they drift by up to ~1.3 s over 40 s and one more slot appears.
Frames are taken by their position in the decoded stream, not by time.
"""
from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np

from xclip_pl.data.video import (
    FrameConverter,
    FrameSampling,
    VideoDecodeError,
    sample_frame_indices,
)


def reference_window(start: float | None, end: float | None) -> tuple[int, int | None] | None:
    """The reference loaders' whole-second window (DiDeMo / ActivityNet ``_get_rawvideo``): ``int()`` of
    each time, negatives to 0, swapped if reversed, ``end + 1`` if equal. None (no window) = the whole video;
    a missing start is 0, a missing end the end of the video (None)."""
    if start is None and end is None:
        return None
    first = max(0, int(start)) if start is not None else 0
    if end is None:
        return first, None
    last = max(0, int(end))
    if first > last:
        first, last = last, first
    elif first == last:
        last += 1
    return first, last


def reference_candidate_indices(frame_count: int, frame_rate: int, window: tuple[int, int | None] | None = None,
                                per_second: int = 1, readable_frames: int | None = None) -> list[int]:
    """Frame indices the reference's ``video_to_tensor`` reads, in order (before ``max_frames`` are kept).

    ``frame_rate`` is ``int(fps)`` and ``frame_count`` the container's frame count, which sets the last second
    ``ceil(frame_count / frame_rate)`` (a window's end is capped there). For every whole second ``sec`` of the
    window it reads frames ``sec * frame_rate + k * (frame_rate // per_second)``, ``k < per_second``, and stops
    at the first one the stream does not hold (index >= ``readable_frames``, default ``frame_count``).
    """
    total_seconds = -(-frame_count // frame_rate)
    first, last = (0, total_seconds) if window is None else window
    last = total_seconds if last is None else min(last, total_seconds)
    offsets = list(range(0, frame_rate, max(1, frame_rate // per_second)))[:per_second]
    readable = frame_count if readable_frames is None else readable_frames
    indices: list[int] = []
    for second in range(first, last + 1):
        for offset in offsets:
            if second * frame_rate + offset >= readable:
                return indices
            indices.append(second * frame_rate + offset)
    return indices


def _reference_frame_rate(stream: av.VideoStream) -> float:
    """OpenCV's ``CAP_PROP_FPS``: the average frame rate, else FFmpeg's guess; 0.0 if unknown."""
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _reference_frame_count(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """OpenCV's ``CAP_PROP_FRAME_COUNT``: the stream's frame count, else ``floor(duration * fps + 0.5)`` with
    the container's duration (else the stream's); if neither is known, the number of packets."""
    if stream.frames:
        return int(stream.frames)
    duration = container.duration / av.time_base if container.duration else 0.0
    if duration <= 0 and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    if duration > 0:
        return math.floor(duration * _reference_frame_rate(stream) + 0.5)
    count = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return count


def _grab_indices(container: av.container.InputContainer, stream: av.VideoStream, targets: list[int],
                  to_pixels: FrameConverter) -> tuple[list[np.ndarray], int]:
    """Decode from the first frame and keep the frames at positions ``targets`` (ascending) of the stream,
    converted by ``to_pixels``. Returns the kept frames and how many frames were decoded (all of them when the
    stream ended early)."""
    kept: list[np.ndarray] = []
    position = 0
    for frame in container.decode(stream):
        if position == targets[len(kept)]:
            pixels = to_pixels(frame)
            while len(kept) < len(targets) and targets[len(kept)] == position:
                kept.append(pixels)
            if len(kept) == len(targets):
                return kept, position + 1
        position += 1
    return kept, position


def _decode_reference_once(
    path: Path, max_frames: int, to_pixels: FrameConverter, per_second: int, sampling: FrameSampling,
    window: tuple[int, int | None] | None, decode_threads: int, readable_frames: int | None,
) -> tuple[list[np.ndarray], int, bool]:
    """One pass of the reference arithmetic: ``(kept frames, frames decoded, all targets found)``."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = decode_threads
        fps = _reference_frame_rate(stream)
        if int(fps) < per_second:
            raise VideoDecodeError(
                f"{path}: its frame rate {fps:.3f} truncates to {int(fps)} frames per second, fewer than the "
                f"{per_second} the reference's arithmetic samples (data.frame_times: reference; it divides by "
                "zero or fails an assertion there); use data.frame_times: timestamps for such videos")
        frame_count = _reference_frame_count(container, stream)
        candidates = reference_candidate_indices(frame_count, int(fps), window, per_second, readable_frames)
        if not candidates:
            raise VideoDecodeError(f"{path}: no frame in the window {window} (whole seconds of {int(fps)} frames; "
                                   f"{frame_count} frames)")
        targets = [candidates[i] for i in sample_frame_indices(len(candidates), max_frames, sampling)]
        kept, decoded = _grab_indices(container, stream, targets, to_pixels)
        return kept, decoded, len(kept) == len(targets)


def decode_reference(path: Path, max_frames: int, to_pixels: FrameConverter, fps: float, sampling: FrameSampling,
                     start: float | None, end: float | None, decode_threads: int = 1) -> list[np.ndarray]:
    """The reference's frames, converted by ``to_pixels``: indices from the container's frame count and
    ``int(fps)``; if the stream holds fewer frames than its container claims, again with the reads failing
    where the stream really ends. ``decode_threads``: FFmpeg threads per decode."""
    args = (path, max_frames, to_pixels, int(fps), sampling, reference_window(start, end), decode_threads)
    kept, decoded, complete = _decode_reference_once(*args, readable_frames=None)
    if not complete:
        kept, _, _ = _decode_reference_once(*args, readable_frames=decoded)
    return kept
