"""Decoded clips, through an optional cache of ``.npy`` files: :class:`ClipLoader`.

A cache entry is keyed by the file's identity (path, size, mtime) and by every argument that changes the
decoded frames; arguments that only change how fast they are decoded (``skip_nonref``, ``decode_threads``)
are not part of the key. Entries are written atomically, so DataLoader workers may share the cache.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from xclip_pl.data import video
from xclip_pl.data.bad_videos import BadVideoLog
from xclip_pl.data.files import atomic_write
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import ColorMatrix, FrameSampling, FrameTimes, VideoDecodeError


class ClipLoader:
    """Decodes a record's clip with :func:`~xclip_pl.data.video.decode_clip`, through an optional .npy cache.

    Args:
        max_frames: frames per clip (F); shorter videos are padded and masked.
        image_size: square frame side after resize + centre crop.
        fps: candidate frames per second before sampling ``max_frames`` of them.
        sampling: which candidates to keep when there are more than ``max_frames``.
        cache_dir: directory for decoded clips (``<key>.frames.npy`` + ``<key>.mask.npy``), or None.
        strict: raise ``VideoDecodeError`` for the first undecodable video instead of substituting an empty clip.
        bad_log: where undecodable videos are recorded (see :class:`~xclip_pl.data.bad_videos.BadVideoLog`).
        frame_times: ``timestamps`` or the reference's OpenCV frame arithmetic (see ``decode_clip``).
        color_matrix: ``tagged`` (the stream's YUV matrix) or ``bt601`` as OpenCV (see ``decode_clip``).
        skip_nonref: skip decoding non-reference frames that no kept frame needs (same frames, less work;
            see ``decode_clip``).
        decode_threads: FFmpeg threads per decode (DataLoader workers already decode in parallel).
    """

    def __init__(self, max_frames: int, image_size: int, fps: float = 1.0, sampling: FrameSampling = "uniform",
                 cache_dir: Path | None = None, strict: bool = False, bad_log: BadVideoLog | None = None,
                 frame_times: FrameTimes = "timestamps", color_matrix: ColorMatrix = "tagged",
                 skip_nonref: bool = True, decode_threads: int = 1) -> None:
        self.max_frames, self.image_size, self.fps, self.sampling = max_frames, image_size, fps, sampling
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.strict, self.bad_log = strict, bad_log
        self.frame_times, self.color_matrix = frame_times, color_matrix
        self.skip_nonref, self.decode_threads = skip_nonref, decode_threads

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
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    def load(self, record: VideoRecord) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(frames uint8 [F, S, S, 3], frame_mask bool [F], ok)``; never raises for a bad file."""
        try:
            key = self.cache_key(record) if self.cache_dir is not None else None
            cached = self._read_cache(key)
            if cached is not None:
                return (*cached, True)
            frames, mask = video.decode_clip(record.path, self.max_frames, self.image_size, fps=self.fps,
                                             sampling=self.sampling, start=record.start, end=record.end,
                                             frame_times=self.frame_times, color_matrix=self.color_matrix,
                                             skip_nonref=self.skip_nonref, decode_threads=self.decode_threads)
        except (VideoDecodeError, OSError) as error:
            if self.strict:
                raise VideoDecodeError(f"{record.path} (video {record.video_id!r}) could not be decoded: {error}. "
                                       "Fix or remove the file, or set data.strict: false to skip bad videos") from error
            warnings.warn(f"video {record.video_id!r} ({record.path}) could not be decoded, using an empty clip: "
                          f"{error}", RuntimeWarning, stacklevel=2)
            if self.bad_log is not None:
                self.bad_log.record(record.path, record.video_id, str(error))
            return (*self.empty(), False)
        self._write_cache(key, frames, mask)
        return frames, mask, True

    def _read_cache(self, key: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """The cached clip, or None (the mask file is written last, so its presence means complete)."""
        if key is None or not (self.cache_dir / f"{key}.mask.npy").is_file():
            return None
        try:
            return np.load(self.cache_dir / f"{key}.frames.npy"), np.load(self.cache_dir / f"{key}.mask.npy")
        except (OSError, ValueError):  # a damaged entry: decode again (and overwrite it)
            return None

    def _write_cache(self, key: str | None, frames: np.ndarray, mask: np.ndarray) -> None:
        """Atomic writes, the mask last: several DataLoader workers may write one key."""
        if key is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for name, array in ((f"{key}.frames.npy", frames), (f"{key}.mask.npy", mask)):
            with atomic_write(self.cache_dir / name, "wb") as handle:
                np.save(handle, array)
