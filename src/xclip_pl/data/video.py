"""Video decoding with PyAV and the reference X-CLIP frame sampling.

The reference loader (OpenCV) takes one frame per second over ``[start, end]`` (whole seconds,
inclusive, frames past the end of the stream are not produced), keeps ``max_frames`` of these
candidates (``slice_framepos`` 2 = uniform, 0 = head, 1 = tail), resizes each kept frame with PIL
bicubic so that its short side is 224 and centre-crops it.

This port computes the target *timestamps* of the kept frames first, then decodes sequentially
only up to the last of them and converts to RGB only the frames it keeps. Timestamps (not
``index / frame_rate``) make it correct for variable-frame-rate video. Packets of non-reference
frames (most B-frames) that lie before the next target are not decoded at all: no other frame is
predicted from them, so the kept frames are the same bytes as with a full decode (``skip_nonref``); whole
GOPs before the next target are not decoded either when a keyframe ahead splits the stream in time there
(the decoder jumps to it: :mod:`xclip_pl.data.frame_grab`).

Three switches reproduce the reference where it differs from this default:

* ``frame_times="reference"``: the OpenCV arithmetic instead of timestamps: ``int(fps)`` frames make a
  "second" (29.97 fps -> 29), whole-second windows, frames picked by their index in the stream
  (:mod:`xclip_pl.data.reference_frames`). Same frames as the timestamps at integer frame rates.
* ``color_matrix="bt601"``: YUV -> RGB with swscale's defaults (BT.601, range from the pixel format) as
  OpenCV does, instead of the matrix and range the stream is tagged with (BT.709 on most HD video).
* ``resize="pil"``: PIL's bicubic resize of the RGB image, as the reference, instead of torch's ``uint8``
  antialiased bicubic (PIL's filter: within 2 levels of PIL's bytes, ~0.004 levels apart on average, ~6x
  faster) or swscale's bicubic (``resize="swscale"``); see
  :mod:`xclip_pl.data.frame_convert` and ``tests/test_decode_resize.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import av
import numpy as np

from xclip_pl.data.frame_convert import (  # noqa: F401 (re-exported: the decoding API's helpers)
    ColorMatrix,
    FrameConverter,
    ResizeMethod,
    center_crop_origin,
    frame_to_image,
    resize_center_crop,
    resized_size,
)
from xclip_pl.data.frame_grab import (
    _TIME_EPS,
    _grab_frames,
    _NeedsFullDecode,
    _StreamEndedEarly,
    _StreamTiming,
)

FrameSampling = Literal["uniform", "head", "tail"]
FrameTimes = Literal["timestamps", "reference"]

class VideoDecodeError(RuntimeError):
    """A video that cannot be decoded (missing, zero bytes, truncated, not a video, no frames).

    The message names the file."""


def sample_frame_indices(num_candidates: int, max_frames: int, sampling: FrameSampling = "uniform") -> list[int]:
    """Which of the ``num_candidates`` 1-fps candidate frames to keep, in temporal order.

    All of them if ``num_candidates <= max_frames``; otherwise ``uniform`` keeps
    ``floor(linspace(0, n - 1, max_frames))`` (reference ``slice_framepos=2``, first and last kept),
    ``head`` the first ``max_frames`` and ``tail`` the last ``max_frames``.
    """
    if num_candidates < 0 or max_frames < 1:
        raise ValueError(f"need num_candidates >= 0 and max_frames >= 1, got {num_candidates}, {max_frames}")
    if num_candidates <= max_frames:
        return list(range(num_candidates))
    if sampling == "uniform":
        return np.linspace(0, num_candidates - 1, num=max_frames).astype(np.int64).tolist()
    if sampling == "head":
        return list(range(max_frames))
    if sampling == "tail":
        return list(range(num_candidates - max_frames, num_candidates))
    raise ValueError(f"sampling must be 'uniform', 'head' or 'tail', got {sampling!r}")


def candidate_times(duration: float, fps: float, start: float | None = None, end: float | None = None) -> list[float]:
    """Times (seconds from the first frame) of the candidate frames: one per ``1 / fps`` from ``start``
    up to ``end`` inclusive, only those before the end of the stream (``t < duration``)."""
    first = 0.0 if start is None else max(0.0, float(start))
    last = duration if end is None else float(end)
    times: list[float] = []
    k = 0
    while True:
        t = first + k / fps
        if t > last + _TIME_EPS or t >= duration - _TIME_EPS:
            return times
        times.append(t)
        k += 1


def _stream_timing(container: av.container.InputContainer, stream: av.VideoStream) -> _StreamTiming:
    """Origin, duration and frame interval from the headers (mp4: stream; webm/mkv: container)."""
    time_base = stream.time_base
    origin = None
    if time_base and stream.start_time is not None:
        origin = float(stream.start_time * time_base)
    duration = None
    if time_base and stream.duration:
        duration = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / av.time_base
        if container.start_time is not None and origin is not None:
            duration -= max(0.0, origin - container.start_time / av.time_base)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    frame_interval = 1.0 / float(rate) if rate else 0.0
    return _StreamTiming(origin, duration, frame_interval)


def _scan_duration(container: av.container.InputContainer, stream: av.VideoStream, origin: float | None) -> float:
    """Duration in seconds from the packet timestamps (demux only, no decoding)."""
    time_base = stream.time_base
    first, last = None, None
    for packet in container.demux(stream):
        if packet.pts is None or not time_base:
            continue
        begin = float(packet.pts * time_base)
        finish = begin + float((packet.duration or 0) * time_base)
        first = begin if first is None else min(first, begin)
        last = finish if last is None else max(last, finish)
    if last is None:
        return 0.0
    return last - (origin if origin is not None else first)


def _decode_once(
    path: Path, max_frames: int, to_pixels: FrameConverter, fps: float, sampling: FrameSampling,
    start: float | None, end: float | None, decode_threads: int,
    known_duration: float | None, skip_nonref: bool = False,
) -> list[np.ndarray]:
    """One pass: open, work out the targets, decode them. ``known_duration`` overrides the header."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = decode_threads
        timing = _stream_timing(container, stream)
        duration = known_duration if known_duration is not None else timing.duration
        if duration is None:
            duration = _scan_duration(container, stream, timing.origin)
            container.seek(0)
        times = candidate_times(duration, fps, start, end)
        if not times:
            raise VideoDecodeError(
                f"{path}: no frame in the window start={start} end={end} (duration {duration:.3f} s)")
        targets = [times[i] for i in sample_frame_indices(len(times), max_frames, sampling)]
        return _grab_frames(container, stream, timing, targets, to_pixels, skip_nonref)


def _decode_skipping(*args, known_duration: float | None, skip_nonref: bool) -> list[np.ndarray]:
    """:func:`_decode_once`, with ``skip_nonref`` skipping non-reference frames, again without when a
    skipped frame could have mattered."""
    if skip_nonref:
        try:
            return _decode_once(*args, known_duration=known_duration, skip_nonref=True)
        except _NeedsFullDecode:
            pass
    return _decode_once(*args, known_duration=known_duration)


def _check_arguments(max_frames: int, image_size: int, fps: float, sampling: str, frame_times: str,
                     color_matrix: str, resize: str) -> None:
    """Programming errors (not bad files) raise ValueError."""
    if sampling not in ("uniform", "head", "tail"):
        raise ValueError(f"sampling must be 'uniform', 'head' or 'tail', got {sampling!r}")
    if frame_times not in ("timestamps", "reference"):
        raise ValueError(f"frame_times must be 'timestamps' or 'reference', got {frame_times!r}")
    if color_matrix not in ("tagged", "bt601"):
        raise ValueError(f"color_matrix must be 'tagged' or 'bt601', got {color_matrix!r}")
    if resize not in ("torch", "swscale", "pil"):
        raise ValueError(f"resize must be 'torch', 'swscale' or 'pil', got {resize!r}")
    if max_frames < 1 or image_size < 1 or fps <= 0:
        raise ValueError(f"need max_frames >= 1, image_size >= 1, fps > 0; got {max_frames}, {image_size}, {fps}")
    if frame_times == "reference" and fps != int(fps):
        raise ValueError(f"frame_times='reference' samples a whole number of frames per second (the reference's "
                         f"feature_framerate is an int); got fps={fps}")


def decode_clip(
    path: str | Path,
    max_frames: int,
    image_size: int,
    fps: float = 1.0,
    sampling: FrameSampling = "uniform",
    start: float | None = None,
    end: float | None = None,
    frame_times: FrameTimes = "timestamps",
    color_matrix: ColorMatrix = "tagged",
    skip_nonref: bool = True,
    decode_threads: int = 1,
    resize: ResizeMethod = "torch",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the reference's 1-fps frames of one video (window ``[start, end]`` seconds, inclusive).

    ``frame_times``: ``timestamps`` takes the frames shown at ``start + k / fps`` seconds; ``reference``
    the OpenCV loader's frame indices (``int(fps)`` frames a second, whole-second window). ``color_matrix``:
    ``tagged`` converts YUV with the stream's tagged matrix, ``bt601`` with BT.601 as OpenCV does. ``resize``:
    ``torch`` resizes with torch's antialiased bicubic (PIL's filter: within 2 levels of PIL's bytes, ~6x
    faster), ``swscale`` with swscale's bicubic (~0.25 levels from PIL's on average, up to
    ~10 at sharp edges), ``pil`` with PIL's bicubic as the reference (see :mod:`xclip_pl.data.frame_convert`).
    ``skip_nonref`` (timestamps only): do not decode the packets of non-reference frames before the next
    target (same frames; ~30 % less H.264 work on x264 clips with B-frames); False decodes every frame up to
    the last target. ``decode_threads``: FFmpeg threads per decode (DataLoader workers already run in
    parallel). Neither changes the frames.

    Returns ``frames`` uint8 [max_frames, image_size, image_size, 3] (RGB; unused slots are zeros) and
    ``frame_mask`` bool [max_frames] (True for the first n decoded slots). Raises VideoDecodeError.
    """
    _check_arguments(max_frames, image_size, fps, sampling, frame_times, color_matrix, resize)
    path = Path(path)
    if frame_times == "timestamps" and start is not None and end is not None and end < start:
        raise VideoDecodeError(f"{path}: window end {end} is before its start {start}")  # annotation data, not a bug
    args = (path, max_frames, FrameConverter(image_size, color_matrix, resize), fps, sampling, start, end,
            decode_threads)
    try:
        if frame_times == "reference":
            from xclip_pl.data.reference_frames import decode_reference  # noqa: PLC0415 (it builds on this module)

            kept = decode_reference(*args)
        else:
            kept = _decode_by_timestamps(*args, skip_nonref=skip_nonref)
    except VideoDecodeError:
        raise
    except _StreamEndedEarly as early:
        raise VideoDecodeError(f"{path}: stream ends at {early.measured_duration:.3f} s, before its frames") from None
    except (av.FFmpegError, OSError) as error:  # what PyAV raises for bad files; our own bugs raise as themselves
        raise VideoDecodeError(f"{path}: {type(error).__name__}: {error}") from error
    if not kept:
        raise VideoDecodeError(f"{path}: no frame could be decoded")
    frames = np.zeros((max_frames, image_size, image_size, 3), dtype=np.uint8)
    for slot, pixels in enumerate(kept):  # one copy each (np.stack would copy them all twice)
        frames[slot] = pixels
    frame_mask = np.zeros(max_frames, dtype=bool)
    frame_mask[: len(kept)] = True
    return frames, frame_mask


def _decode_by_timestamps(*args, skip_nonref: bool) -> list[np.ndarray]:
    """The default: target timestamps, again with the measured duration if the header's was too long."""
    try:
        return _decode_skipping(*args, known_duration=None, skip_nonref=skip_nonref)
    except _StreamEndedEarly as early:
        return _decode_skipping(*args, known_duration=early.measured_duration, skip_nonref=skip_nonref)
