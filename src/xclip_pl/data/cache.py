"""Decoded clips, through an optional cache of decoded frames: :class:`ClipLoader`.

A cache entry is keyed by the file's identity (path, size, mtime) and by every argument that changes the
decoded frames; arguments that only change how fast they are decoded (``skip_nonref``, ``decode_threads``)
are not part of the key. Entries are written atomically, so DataLoader workers may share the cache.

Stored format (``cache_format``, chosen from ``benchmarks/cache_read.py``; see ``benchmarks/RESULTS.md``):

* ``npy`` (default, lossless): raw uint8 ``<key>.frames.npy`` + ``<key>.mask.npy``; reads are a copy from the
  page cache (thousands of clips/s per worker), and :meth:`ClipLoader.read_into` reads straight into a batch.
  Lossless compression (PNG, lossless WebP) saved under 2x on natural-like content and read 10-50x slower.
* ``jpeg`` (LOSSY, a switch for disk-bound sets such as ActivityNet at 64 frames): one JPEG strip per clip at
  ``jpeg_quality`` with 4:4:4 chroma, ~5-10x smaller; pixels differ from decoding by a few levels. The format
  and quality are part of the key, so switching never reads the other format's entries.
"""
from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from xclip_pl.data import video
from xclip_pl.data.bad_videos import BadVideoLog
from xclip_pl.data.files import atomic_write
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import (
    ColorMatrix,
    FrameSampling,
    FrameTimes,
    ResizeMethod,
    VideoDecodeError,
)

CacheFormat = Literal["npy", "jpeg"]


class ClipLoader:
    """Decodes a record's clip with :func:`~xclip_pl.data.video.decode_clip`, through an optional .npy cache.

    Args:
        max_frames: frames per clip (F); shorter videos are padded and masked.
        image_size: square frame side after resize + centre crop.
        fps: candidate frames per second before sampling ``max_frames`` of them.
        sampling: which candidates to keep when there are more than ``max_frames``.
        cache_dir: directory for decoded clips (``<key>.frames.npy`` or ``.jpg`` + ``<key>.mask.npy``), or None.
        strict: raise ``VideoDecodeError`` for the first undecodable video instead of substituting an empty clip.
        bad_log: where undecodable videos are recorded (see :class:`~xclip_pl.data.bad_videos.BadVideoLog`).
        frame_times: ``timestamps`` or the reference's OpenCV frame arithmetic (see ``decode_clip``).
        color_matrix: ``tagged`` (the stream's YUV matrix) or ``bt601`` as OpenCV (see ``decode_clip``).
        skip_nonref: skip decoding non-reference frames that no kept frame needs (same frames, less work;
            see ``decode_clip``).
        decode_threads: FFmpeg threads per decode (DataLoader workers already decode in parallel).
        resize: ``torch`` (default), ``swscale``, or PIL's bicubic as the reference (``pil``; see ``decode_clip``);
            part of the key unless ``pil`` (so caches filled before the switch existed stay valid).
        cache_format: ``npy`` (default): raw uint8, the decoded pixels exactly; ``jpeg``: LOSSY JPEG strips,
            ~5-10x less disk, pixels within a few levels of the decoded ones (see the module docstring).
        jpeg_quality: JPEG quality (1-95) of ``cache_format: jpeg``; part of the cache key.
    """

    def __init__(self, max_frames: int, image_size: int, fps: float = 1.0, sampling: FrameSampling = "uniform",
                 cache_dir: Path | None = None, strict: bool = False, bad_log: BadVideoLog | None = None,
                 frame_times: FrameTimes = "timestamps", color_matrix: ColorMatrix = "tagged",
                 skip_nonref: bool = True, decode_threads: int = 1, cache_format: CacheFormat = "npy",
                 jpeg_quality: int = 95, resize: ResizeMethod = "torch") -> None:
        self.max_frames, self.image_size, self.fps, self.sampling = max_frames, image_size, fps, sampling
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.strict, self.bad_log = strict, bad_log
        self.frame_times, self.color_matrix = frame_times, color_matrix
        self.skip_nonref, self.decode_threads = skip_nonref, decode_threads
        self.resize = resize
        if cache_format not in ("npy", "jpeg") or not 1 <= jpeg_quality <= 95:
            raise ValueError(f"cache_format={cache_format!r}, jpeg_quality={jpeg_quality}: expected 'npy' or 'jpeg' "
                             "and a quality in 1..95")
        self.cache_format, self.jpeg_quality = cache_format, jpeg_quality

    def empty(self) -> tuple[np.ndarray, np.ndarray]:
        """Zero frames and an all-False mask (the stand-in for a video that cannot be decoded)."""
        size = self.image_size
        return np.zeros((self.max_frames, size, size, 3), np.uint8), np.zeros(self.max_frames, bool)

    def cache_key(self, record: VideoRecord) -> str:
        """Hash of the file's identity (path, size, mtime) and of every argument that changes the frames."""
        stat = Path(record.path).stat()
        parts = (str(Path(record.path).resolve()), stat.st_size, stat.st_mtime_ns, self.max_frames,
                 self.image_size, self.fps, self.sampling, record.start, record.end, self.frame_times,
                 self.color_matrix)
        if self.resize != "pil":  # PIL keys stay as they were (caches filled before the switch stay valid)
            parts = (*parts, "resize", self.resize)
        if self.cache_format != "npy":  # npy keys stay as they were (existing caches stay valid)
            parts = (*parts, self.cache_format, self.jpeg_quality)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        """``(F, S, S, 3)``: the shape of every clip this loader gives."""
        return self.max_frames, self.image_size, self.image_size, 3

    def entry_paths(self, key: str) -> tuple[Path, Path]:
        """``(frames file, mask file)`` of a cache entry (the mask is written last: its presence = complete)."""
        suffix = "npy" if self.cache_format == "npy" else "jpg"
        return self.cache_dir / f"{key}.frames.{suffix}", self.cache_dir / f"{key}.mask.npy"

    def load(self, record: VideoRecord) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(frames uint8 [F, S, S, 3], frame_mask bool [F], ok)``; never raises for a bad file."""
        frames = np.empty(self.frame_shape, np.uint8)
        mask, ok = self.load_into(record, frames)
        return frames, mask, ok

    def load_into(self, record: VideoRecord, out: np.ndarray) -> tuple[np.ndarray, bool]:
        """Write the record's frames into ``out`` (uint8 ``[F, S, S, 3]``, e.g. a slot of a batch in shared memory:
        a cached clip is read straight into it); ``(frame_mask bool [F], ok)``; never raises for a bad file
        (``out`` is zeroed then)."""
        try:
            key = self.cache_key(record) if self.cache_dir is not None else None
            mask = self.read_into(key, out) if key is not None else None
            if mask is not None:
                return mask, True
            frames, mask = video.decode_clip(record.path, self.max_frames, self.image_size, fps=self.fps,
                                             sampling=self.sampling, start=record.start, end=record.end,
                                             frame_times=self.frame_times, color_matrix=self.color_matrix,
                                             skip_nonref=self.skip_nonref, decode_threads=self.decode_threads,
                                             resize=self.resize)
        except (VideoDecodeError, OSError) as error:
            if self.strict:
                raise VideoDecodeError(f"{record.path} (video {record.video_id!r}) could not be decoded: {error}. "
                                       "Fix or remove the file, or set data.strict: false to skip bad videos") from error
            warnings.warn(f"video {record.video_id!r} ({record.path}) could not be decoded, using an empty clip: "
                          f"{error}", RuntimeWarning, stacklevel=3)
            if self.bad_log is not None:
                self.bad_log.record(record.path, record.video_id, str(error))
            out[...] = 0
            return np.zeros(self.max_frames, bool), False
        self._write_cache(key, frames, mask)
        out[...] = frames if self.cache_format == "npy" or key is None else self._stored(frames)
        return mask, True

    def read_into(self, key: str, out: np.ndarray) -> np.ndarray | None:
        """Read the entry ``key`` into ``out``; its frame mask, or None when the entry is missing or damaged
        (then ``out`` may hold part of it)."""
        frames_path, mask_path = self.entry_paths(key)
        if not mask_path.is_file():
            return None
        try:
            mask = np.load(mask_path)
            if mask.shape != (self.max_frames,) or mask.dtype != bool:
                return None
            if self.cache_format == "npy":
                return mask if _read_npy_into(frames_path, out) else None
            with Image.open(frames_path) as image:
                strip = np.asarray(image.convert("RGB"))
            if strip.size != out.size:
                return None
            out[...] = strip.reshape(out.shape)
            return mask
        except (OSError, ValueError, EOFError):  # a damaged entry: decode again (and overwrite it)
            return None

    def _read_cache(self, key: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached clip ``(frames, mask)``, or None."""
        if key is None:
            return None
        frames = np.empty(self.frame_shape, np.uint8)
        mask = self.read_into(key, frames)
        return None if mask is None else (frames, mask)

    def _stored(self, frames: np.ndarray) -> np.ndarray:
        """What the cache gives back for ``frames`` (the lossy formats round-trip them through their codec)."""
        if self.cache_format == "npy":
            return frames
        buffer = io.BytesIO()
        self._encode_jpeg(frames, buffer)
        buffer.seek(0)
        with Image.open(buffer) as image:
            return np.asarray(image.convert("RGB")).reshape(frames.shape)

    def _encode_jpeg(self, frames: np.ndarray, handle) -> None:
        """One JPEG strip ``[F * S, S, 3]``, 4:4:4 chroma (no colour subsampling), at ``jpeg_quality``."""
        Image.fromarray(frames.reshape(-1, *frames.shape[2:])).save(handle, format="JPEG", quality=self.jpeg_quality,
                                                                     subsampling=0)

    def _write_cache(self, key: str | None, frames: np.ndarray, mask: np.ndarray) -> None:
        """Atomic writes, the mask last: several DataLoader workers may write one key."""
        if key is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        frames_path, mask_path = self.entry_paths(key)
        with atomic_write(frames_path, "wb") as handle:
            if self.cache_format == "npy":
                np.save(handle, frames)
            else:
                self._encode_jpeg(frames, handle)
        with atomic_write(mask_path, "wb") as handle:
            np.save(handle, mask)


def _read_npy_into(path: Path, out: np.ndarray) -> bool:
    """Read a uint8 ``.npy`` of ``out``'s shape straight into ``out`` (C-contiguous); False if it does not match."""
    with open(path, "rb") as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if shape != out.shape or fortran or dtype != np.uint8 or not out.flags.c_contiguous:
            return False
        return handle.readinto(memoryview(out).cast("B")) == out.nbytes
