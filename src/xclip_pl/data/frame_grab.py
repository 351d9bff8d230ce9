"""Decoding a clip's target frames from an open stream: :func:`_grab_frames` (used by :mod:`xclip_pl.data.video`).

Packets are decoded in decode order up to the last target. With ``skip_nonref`` the decoder drops the
non-reference frames that lie before the next target's window (:class:`_NonrefSkipper`) and jumps over whole
GOPs to a keyframe that splits the stream in time before it (:class:`_PacketFeed`, :func:`_jump_index`); every
assumption that keeps the kept frames byte-equal to a full decode is checked, and a failed check raises
:class:`_NeedsFullDecode` so that the caller decodes again without skipping.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import av
import numpy as np

_TIME_EPS = 1e-6


class _NeedsFullDecode(Exception):
    """Internal: a frame skipped as non-reference may matter (the stream ended before a target, or
    frames lack timestamps): decode again without skipping."""


class _StreamEndedEarly(Exception):
    """Internal: the stream ended well before the duration its header claims."""

    def __init__(self, measured_duration: float) -> None:
        super().__init__(measured_duration)
        self.measured_duration = measured_duration


@dataclass(frozen=True)
class _StreamTiming:
    """Time facts of a video stream, in seconds."""

    origin: float | None  # time of the stream's first frame (stream.start_time), None if unknown
    duration: float | None  # None if neither the stream nor the container header knows it
    frame_interval: float  # 1 / average frame rate, 0.0 if unknown


def _frame_time(frame: av.VideoFrame, previous: float | None, frame_interval: float) -> float:
    """Presentation time in seconds; if the frame has no pts, one interval after the previous frame."""
    if frame.time is not None:
        return float(frame.time)
    return 0.0 if previous is None else previous + frame_interval


def _seek_before(container: av.container.InputContainer, stream: av.VideoStream, seconds: float) -> None:
    """Seek to the keyframe at or before ``seconds`` (absolute stream time)."""
    container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)


def _grab_frames(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    timing: _StreamTiming,
    targets: list[float],
    to_pixels: Callable[[av.VideoFrame], np.ndarray],
    skip_nonref: bool = False,
) -> list[np.ndarray]:
    """Decode up to the last target; for each target keep the first frame with time >= target - half an
    interval (or the last frame if the stream ends within a frame interval of the target), converted by
    ``to_pixels`` (a :class:`FrameConverter`). With
    ``skip_nonref``, packets of non-reference frames whose time is before the next target's window
    are dropped by the decoder (no frame is predicted from them, so nothing else changes), and the decoder
    jumps ahead to a keyframe that splits the stream before the next target's window (:func:`_jump_index`).

    Raises _StreamEndedEarly when the stream ends clearly before the targets (wrong header duration),
    _NeedsFullDecode when a skipped frame could have mattered.
    """
    half = 0.5 * timing.frame_interval
    origin = timing.origin
    if origin is not None and targets[0] - half > timing.frame_interval:
        _seek_before(container, stream, origin + targets[0] - half)
    codec = stream.codec_context
    skip_nonref = skip_nonref and hasattr(codec, "skip_frame")  # a PyAV without the setting decodes everything
    seconds_per_tick = float(stream.time_base) if stream.time_base else 0.0
    jumps = skip_nonref and origin is not None and seconds_per_tick > 0 and hasattr(codec, "flush_buffers")
    feed = _PacketFeed(container.demux(stream), codec, seconds_per_tick, origin, jumps)
    skipper = _NonrefSkipper(codec, seconds_per_tick) if skip_nonref else None
    kept: list[np.ndarray] = []
    last_frame, last_time = None, None
    while (packet := feed.next(targets[len(kept)] - half - _TIME_EPS)) is not None:
        if skipper is not None:
            skipper.before(packet, origin, targets[len(kept)] - half - _TIME_EPS)
        for frame in packet.decode():
            if frame.time is None and ((skipper is not None and skipper.skipped_until is not None) or feed.jumped):
                raise _NeedsFullDecode  # times are counted frame by frame: every frame must be seen
            feed.check_frame(frame)
            time = _frame_time(frame, last_time, timing.frame_interval)
            origin = time if origin is None else origin
            relative = time - origin
            if relative >= targets[len(kept)] - half - _TIME_EPS:
                pixels = to_pixels(frame)
                while len(kept) < len(targets) and relative >= targets[len(kept)] - half - _TIME_EPS:
                    kept.append(pixels)
                if len(kept) == len(targets):
                    return kept
            last_frame, last_time = frame, relative
    feed.check_end()
    if skipper is not None:
        skipper.check_end(last_time)
    return _fill_after_stream_end(kept, targets, last_frame, last_time, timing.frame_interval, to_pixels)


def _fill_after_stream_end(kept: list[np.ndarray], targets: list[float], last_frame: av.VideoFrame | None,
                           last_time: float | None, frame_interval: float,
                           to_pixels: Callable[[av.VideoFrame], np.ndarray]) -> list[np.ndarray]:
    """The stream ended before every target had its frame: the last frame stands in for the targets within
    the tolerance of its time (an approximate header duration); further ones raise _StreamEndedEarly."""
    if last_frame is None:
        return kept
    tolerance = max(2.0 * frame_interval, 0.1)
    if targets[len(kept)] - last_time > tolerance:
        raise _StreamEndedEarly(last_time + max(frame_interval, _TIME_EPS))
    pixels = to_pixels(last_frame)
    return kept + [pixels] * (len(targets) - len(kept))


class _NonrefSkipper:
    """Sets the decoder's ``skip_frame`` to NONREF for packets whose time is before the next target's window
    (only on a change: the setter is not free) and remembers the latest skipped time."""

    def __init__(self, codec, seconds_per_tick: float) -> None:
        self.codec, self.seconds_per_tick = codec, seconds_per_tick
        self.skipping = False  # the decoder's skip_frame setting is NONREF
        self.skipped_until: float | None = None  # latest time of a skipped packet

    def before(self, packet: av.Packet, origin: float | None, window: float) -> None:
        packet_time = _packet_time(packet, self.seconds_per_tick, origin)
        skip = packet_time is not None and packet_time < window
        if skip != self.skipping:
            self.codec.skip_frame, self.skipping = ("NONREF" if skip else "DEFAULT"), skip
        if skip:
            self.skipped_until = packet_time if self.skipped_until is None else max(self.skipped_until, packet_time)

    def check_end(self, last_time: float | None) -> None:
        if self.skipped_until is not None and (last_time is None or self.skipped_until > last_time):
            raise _NeedsFullDecode  # the stream's true last frame may have been skipped


class _PacketFeed:
    """The packets to decode, in decode order; with ``jumps``, whole GOPs before the next target's window are
    dropped and the decoder restarts at the keyframe that splits the stream there (:func:`_jump_index`), with
    the checks that keep this exact (else _NeedsFullDecode)."""

    def __init__(self, demuxed, codec, seconds_per_tick: float, origin: float | None, jumps: bool) -> None:
        self.demuxed, self.codec, self.jumps = iter(demuxed), codec, jumps
        self.seconds_per_tick, self.origin = seconds_per_tick, origin
        self.ahead: deque[av.Packet] = deque()  # packets read from the demuxer, not yet decoded or dropped
        self.behind = _PtsBound()  # pts of every packet taken from ``ahead`` (decoded or dropped)
        self.keyframe, self.jumped_to = None, None  # the last jump's keyframe and its pts: later packets show after it
        self.awaited = None  # pts of that keyframe until its frame has come out, the first after the jump

    @property
    def jumped(self) -> bool:
        return self.jumped_to is not None

    def next(self, window: float) -> av.Packet | None:
        """The next packet to decode (None at the end); ``window``: the next target's window start (seconds)."""
        if not self.ahead:
            if self.jumps:
                self._read_ahead_and_jump(window)
            else:
                self.ahead.extend(itertools.islice(self.demuxed, 1))
            if not self.ahead:
                return None
        packet = self.ahead.popleft()
        self.behind.add(packet.pts)
        if self.jumped and packet is not self.keyframe and packet.pts is not None and packet.pts <= self.jumped_to:
            raise _NeedsFullDecode  # a frame shown before the keyframe jumped to (an open GOP's leading frame)
        return packet

    def _read_ahead_and_jump(self, window: float) -> None:
        jump = _jump_index(self.demuxed, self.ahead, self.behind, window, self.seconds_per_tick, self.origin)
        if jump:
            for _ in range(jump):
                self.behind.add(self.ahead.popleft().pts)
            self.codec.flush_buffers()  # as a seek does; the frames still inside are all before the window
            self.keyframe = self.ahead[0]
            self.jumped_to = self.awaited = self.keyframe.pts

    def check_frame(self, frame: av.VideoFrame) -> None:
        """The first frame out after a jump must be the keyframe's."""
        if self.awaited is not None:
            if frame.pts != self.awaited:
                raise _NeedsFullDecode  # the decoder did not restart at the keyframe
            self.awaited = None

    def check_end(self) -> None:
        if self.awaited is not None:
            raise _NeedsFullDecode  # the keyframe jumped to never came out


class _PtsBound:
    """The largest pts of a set of packets, ``unknown`` once one of them had none."""

    def __init__(self) -> None:
        self.largest: int | None = None
        self.unknown = False

    def add(self, pts: int | None) -> None:
        if pts is None:
            self.unknown = True
        elif self.largest is None or pts > self.largest:
            self.largest = pts


#: a jump needs every frame it loses to be this much (seconds) before the window (float rounding of times)
_JUMP_MARGIN = 1e-7


def _jump_index(demuxed: Iterator[av.Packet], ahead: deque[av.Packet], behind: _PtsBound, window: float,
                seconds_per_tick: float, origin: float) -> int:
    """Read packets into the empty ``ahead`` up to the window (relative seconds) of the next target and return
    the position in ``ahead`` of the keyframe to resume decoding at (0: decode them all).

    A keyframe K at position k >= 1 qualifies when it splits the stream in time: every packet before it in
    decode order (``behind``: all decoded or dropped so far, and ``ahead[:k]``) has a pts, smaller than
    pts(K) and shown more than ``_JUMP_MARGIN`` before ``window``, and no packet read after it has a pts <=
    pts(K) (no leading frames: the reading goes on until a decode time reaches pts(K), past which, decode
    times being <= presentation times, none can come). Frames before K are then never the frame of this target
    or a later one, nor the last frame of the stream (K comes out after them); frames from K on do not depend
    on them and come out the same after the decoder's flush. The latest such K is returned.
    """
    for packet in demuxed:
        ahead.append(packet)
        if packet.pts is None or packet.dts is None or packet.dts * seconds_per_tick - origin > window:
            break
    if len(ahead) < 2 or behind.unknown:
        return 0
    candidates = []
    largest = behind.largest
    for position, packet in enumerate(ahead):
        pts = packet.pts
        if pts is None:
            break
        if (position and packet.is_keyframe and largest is not None and largest < pts
                and largest * seconds_per_tick - origin < window - _JUMP_MARGIN):
            candidates.append(position)
        largest = pts if largest is None else max(largest, pts)
    if not candidates:
        return 0
    latest_pts = max(ahead[position].pts for position in candidates)
    while ahead[-1].pts is not None and ahead[-1].dts is not None and ahead[-1].dts < latest_pts:
        following = next(demuxed, None)  # read on until no leading frame of a candidate can follow
        if following is None:
            break
        ahead.append(following)
    smallest_after = None  # smallest pts after each position, from the end
    shown_after = [None] * len(ahead)
    for position in range(len(ahead) - 1, -1, -1):
        shown_after[position] = smallest_after
        pts = ahead[position].pts
        if pts is not None and (smallest_after is None or pts < smallest_after):
            smallest_after = pts
    for position in reversed(candidates):
        if shown_after[position] is None or shown_after[position] > ahead[position].pts:
            return position
    return 0


def _packet_time(packet: av.Packet, seconds_per_tick: float, origin: float | None) -> float | None:
    """Presentation time of a packet's frame relative to the stream origin, None if unknown
    (``seconds_per_tick``: the stream's time base as a float, 0.0 if it has none)."""
    if packet.pts is None or origin is None or not seconds_per_tick:
        return None
    return packet.pts * seconds_per_tick - origin
