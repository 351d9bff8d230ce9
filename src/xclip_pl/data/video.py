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
* ``resize="pil"``: PIL's bicubic resize of the RGB image, as the reference, instead of swscale's bicubic
  resize of the planar RGB frame (``swscale``: the same RGB conversion, then a resize ~6x faster than PIL's;
  ~0.25 levels from PIL's on average, over 99 % of values within one level, up to ~10 at sharp edges, where
  swscale's cubic (a = -0.6) rings a little more than PIL's (a = -0.5); ``tests/test_decode_resize.py``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import av
import av.video.reformatter
import numpy as np
from PIL import Image

from xclip_pl.data.frame_grab import (
    _TIME_EPS,
    _grab_frames,
    _NeedsFullDecode,
    _StreamEndedEarly,
    _StreamTiming,
)

FrameSampling = Literal["uniform", "head", "tail"]
FrameTimes = Literal["timestamps", "reference"]
ColorMatrix = Literal["tagged", "bt601"]
ResizeMethod = Literal["swscale", "pil"]

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


def resized_size(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(width, height) with the short side ``image_size`` (torchvision ``Resize(size)`` arithmetic)."""
    short, long = min(width, height), max(width, height)
    new_long = int(image_size * long / short)
    return (image_size, new_long) if width <= height else (new_long, image_size)


def center_crop_origin(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(left, top) of the centred ``image_size`` square (torchvision ``CenterCrop(size)`` arithmetic)."""
    return int(round((width - image_size) / 2.0)), int(round((height - image_size) / 2.0))


def resize_center_crop(image: Image.Image, image_size: int) -> np.ndarray:
    """PIL bicubic resize so the short side is ``image_size``, then centre crop to a square
    (torchvision ``Resize(size, BICUBIC)`` + ``CenterCrop(size)`` arithmetic). -> uint8 [S, S, 3]."""
    new_size = resized_size(*image.size, image_size)
    if new_size != image.size:
        image = image.resize(new_size, Image.BICUBIC)
    left, top = center_crop_origin(*new_size, image_size)
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _colour_arguments(frame: av.VideoFrame, color_matrix: ColorMatrix) -> dict[str, str]:
    """swscale's source matrix and range for ``color_matrix`` (empty: the frame's own tags)."""
    if color_matrix == "bt601" and not frame.format.is_rgb and frame.format.name.startswith(("yuv", "nv")):
        full_range = frame.format.name.startswith("yuvj")
        return {"src_colorspace": "ITU601", "src_color_range": "JPEG" if full_range else "MPEG"}
    return {}


def frame_to_image(frame: av.VideoFrame, color_matrix: ColorMatrix = "tagged") -> Image.Image:
    """RGB PIL image of a decoded frame. ``tagged``: the matrix and range the frame is tagged with (swscale's
    BT.601 limited range when untagged); ``bt601``: BT.601 whatever the tag, limited range unless the pixel
    format is a full-range ``yuvj*`` one: what OpenCV's ``sws_scale`` with default settings does."""
    return frame.to_image(**_colour_arguments(frame, color_matrix))


def _plane_pixels(plane: av.video.plane.VideoPlane, height: int) -> np.ndarray:
    """uint8 [height, line_size] view of one 8-bit plane (rows may be padded past the plane's width)."""
    return np.frombuffer(plane, dtype=np.uint8).reshape(height, plane.line_size)


class FrameConverter:
    """Decoded frame -> uint8 [S, S, 3] RGB: YUV -> RGB (``color_matrix``), bicubic resize of the short side to
    ``image_size``, centre crop. ``resize``: ``pil`` resizes the RGB image with PIL as the reference;
    ``swscale`` converts to planar RGB with the same swscale conversion (the same RGB bytes), then resizes the
    planes with swscale's bicubic (~6x faster; ~0.25 levels from PIL's on average, over 99 % of values within
    one level, up to ~10 at sharp edges). One converter per decode: it
    keeps its two swscale contexts between frames."""

    def __init__(self, image_size: int, color_matrix: ColorMatrix = "tagged", resize: ResizeMethod = "swscale") -> None:
        self.image_size, self.color_matrix, self.resize = image_size, color_matrix, resize
        self._to_planar_rgb = av.video.reformatter.VideoReformatter()
        self._resizer = av.video.reformatter.VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.resize == "pil":
            return resize_center_crop(frame_to_image(frame, self.color_matrix), self.image_size)
        return self._swscale_resize_center_crop(frame)

    def _swscale_resize_center_crop(self, frame: av.VideoFrame) -> np.ndarray:
        """gbrp at full size (swscale's RGB conversion, as ``to_image``), bicubic resize, crop, -> RGB."""
        planar_rgb = self._to_planar_rgb.reformat(frame, format="gbrp", threads=1,
                                                  **_colour_arguments(frame, self.color_matrix))
        width, height = resized_size(frame.width, frame.height, self.image_size)
        resized = self._resizer.reformat(planar_rgb, width=width, height=height, interpolation="BICUBIC", threads=1)
        left, top = center_crop_origin(width, height, self.image_size)
        rows, columns = slice(top, top + self.image_size), slice(left, left + self.image_size)
        green, blue, red = (_plane_pixels(plane, height)[rows, columns] for plane in resized.planes)
        return np.stack([red, green, blue], axis=-1)


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
    if resize not in ("swscale", "pil"):
        raise ValueError(f"resize must be 'swscale' or 'pil', got {resize!r}")
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
    resize: ResizeMethod = "swscale",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode the reference's 1-fps frames of one video (window ``[start, end]`` seconds, inclusive).

    ``frame_times``: ``timestamps`` takes the frames shown at ``start + k / fps`` seconds; ``reference``
    the OpenCV loader's frame indices (``int(fps)`` frames a second, whole-second window). ``color_matrix``:
    ``tagged`` converts YUV with the stream's tagged matrix, ``bt601`` with BT.601 as OpenCV does. ``resize``:
    ``swscale`` resizes the RGB planes with swscale's bicubic (~6x faster; ~0.25 levels from PIL's on average,
    up to ~10 at sharp edges), ``pil`` with PIL's bicubic as the reference (see :class:`FrameConverter`).
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
