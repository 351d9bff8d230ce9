"""PyAV decoding and the reference's 1-fps frame sampling, on clips written by the tests."""
from __future__ import annotations

from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from xclip_pl.data import frame_grab, video
from xclip_pl.data.video import VideoDecodeError, decode_clip, sample_frame_indices


def index_colour(index: int) -> tuple[int, int, int]:
    """A flat colour that encodes a frame index 0..99 (tens in red, units in green, steps of 20)."""
    return 40 + 20 * (index // 10), 40 + 20 * (index % 10), 128


def read_index(frame: np.ndarray) -> int:
    """Inverse of index_colour, tolerant to compression noise (+-9 levels)."""
    red, green = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round((red - 40) / 20)) * 10 + int(round((green - 40) / 20))


def write_index_clip(path: Path, num_frames: int, rate: int = 10, codec: str = "libx264",
                     size: tuple[int, int] = (64, 48), pts_ms: list[int] | None = None, preset: str = "ultrafast",
                     options: dict[str, str] | None = None, gop_size: int = 8) -> Path:
    """A clip whose frame i is a flat index_colour(i); optional explicit timestamps in ms (VFR). x264's
    ``ultrafast`` preset writes no B-frames, ``medium`` (its default) does; ``options`` adds encoder options."""
    width, height = size
    if codec == "libx264":
        base = {"crf": "12", "preset": preset}
    elif codec in ("libx265", "mpeg4", "mpeg2video"):
        base = {}
    else:
        base = {"crf": "20", "b": "0"}
    options = {**base, **(options or {})}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop_size
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for index in range(num_frames):
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            pixels[:] = index_colour(index)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def kept_indices(frames: np.ndarray, frame_mask: np.ndarray) -> list[int]:
    return [read_index(frame) for frame in frames[frame_mask]]


@pytest.fixture(scope="module")
def ten_second_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 10 fps: 100 frames, the 1-fps candidates are frames 0, 10, ..., 90."""
    return write_index_clip(tmp_path_factory.mktemp("clips") / "ten.mp4", num_frames=100)


@pytest.mark.parametrize(
    ("num_candidates", "max_frames", "sampling", "expected"),
    [
        (3, 5, "uniform", [0, 1, 2]),
        (5, 5, "head", [0, 1, 2, 3, 4]),
        (0, 4, "uniform", []),
        (10, 4, "uniform", [0, 3, 6, 9]),
        (11, 4, "uniform", [0, 3, 6, 10]),
        (10, 1, "uniform", [0]),
        (10, 4, "head", [0, 1, 2, 3]),
        (10, 4, "tail", [6, 7, 8, 9]),
        (30, 12, "uniform", np.linspace(0, 29, 12, dtype=int).tolist()),
    ],
)
def test_sample_frame_indices(num_candidates: int, max_frames: int, sampling: str, expected: list[int]) -> None:
    assert sample_frame_indices(num_candidates, max_frames, sampling) == expected


def test_sample_frame_indices_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(10, 0)
    with pytest.raises(ValueError):
        sample_frame_indices(10, 4, "middle")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [("uniform", [0, 30, 60, 90]), ("head", [0, 10, 20, 30]), ("tail", [60, 70, 80, 90])],
)
def test_kept_frames_are_the_expected_one_fps_candidates(ten_second_clip: Path, sampling: str,
                                                         expected: list[int]) -> None:
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=4, image_size=32, sampling=sampling)
    assert frame_mask.all()
    assert kept_indices(frames, frame_mask) == expected


def test_output_shape_dtype_and_padding(ten_second_clip: Path) -> None:
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=12, image_size=40)
    assert frames.shape == (12, 40, 40, 3) and frames.dtype == np.uint8
    assert frame_mask.dtype == np.bool_ and frame_mask.tolist() == [True] * 10 + [False] * 2
    assert kept_indices(frames, frame_mask) == list(range(0, 100, 10))
    assert not frames[10:].any()


def test_fps_two_gives_half_second_candidates(ten_second_clip: Path) -> None:
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=3, image_size=16, fps=2.0, sampling="head")
    assert kept_indices(frames, frame_mask) == [0, 5, 10]


def test_start_end_window(ten_second_clip: Path) -> None:
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=8, image_size=16, start=3, end=6)
    assert frame_mask.tolist() == [True] * 4 + [False] * 4
    assert kept_indices(frames, frame_mask) == [30, 40, 50, 60]
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=2, image_size=16, start=5, end=100)
    assert kept_indices(frames, frame_mask) == [50, 90]


def test_empty_windows_raise(ten_second_clip: Path) -> None:
    with pytest.raises(VideoDecodeError, match="ten.mp4"):
        decode_clip(ten_second_clip, max_frames=4, image_size=16, start=20, end=30)  # after the end
    with pytest.raises(VideoDecodeError, match="ten.mp4"):
        decode_clip(ten_second_clip, max_frames=4, image_size=16, start=5, end=2)  # reversed


@pytest.mark.parametrize("resize", ["torch", "swscale", "pil"])
def test_only_kept_frames_are_converted(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch, resize: str) -> None:
    calls = []
    original = video.FrameConverter.__call__
    monkeypatch.setattr(video.FrameConverter, "__call__", lambda self, frame: calls.append(1) or original(self, frame))
    decode_clip(ten_second_clip, max_frames=4, image_size=16, resize=resize)
    assert len(calls) == 4


def test_short_clip_gives_fewer_frames(tmp_path: Path) -> None:
    path = write_index_clip(tmp_path / "short.mp4", num_frames=20)  # 2 s
    frames, frame_mask = decode_clip(path, max_frames=4, image_size=16)
    assert frame_mask.tolist() == [True, True, False, False]
    assert kept_indices(frames, frame_mask) == [0, 10]
    assert not frames[2:].any()


def test_webm_without_frame_count(tmp_path: Path) -> None:
    path = write_index_clip(tmp_path / "clip.webm", num_frames=30, codec="libvpx-vp9")
    with av.open(str(path)) as container:
        assert not container.streams.video[0].frames  # no frame count / duration in the stream header
    frames, frame_mask = decode_clip(path, max_frames=4, image_size=16)
    assert kept_indices(frames, frame_mask) == [0, 10, 20]


def test_variable_frame_rate_uses_timestamps(tmp_path: Path) -> None:
    """2 fps for 5 s, then 20 fps for 5 s: index / average_rate would pick the wrong frames."""
    times_ms = [500 * k for k in range(10)] + [5000 + 50 * k for k in range(100)]
    path = write_index_clip(tmp_path / "vfr.mp4", num_frames=len(times_ms), pts_ms=times_ms)
    frames, frame_mask = decode_clip(path, max_frames=10, image_size=16, sampling="head")
    expected_times = list(range(0, 10_000, 1000))
    assert [times_ms[i] for i in kept_indices(frames, frame_mask)] == expected_times


def test_unknown_duration_scans_packets(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = video._stream_timing
    monkeypatch.setattr(video, "_stream_timing",
                        lambda c, s: video._StreamTiming(original(c, s).origin, None, original(c, s).frame_interval))
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=4, image_size=16)
    assert kept_indices(frames, frame_mask) == [0, 30, 60, 90]


def _claim_duration(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Make every stream header claim ``seconds`` of video."""
    original = video._stream_timing
    monkeypatch.setattr(video, "_stream_timing",
                        lambda c, s: video._StreamTiming(original(c, s).origin, seconds, original(c, s).frame_interval))


def test_header_duration_too_long_is_corrected(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _claim_duration(monkeypatch, 25.0)
    frames, frame_mask = decode_clip(ten_second_clip, max_frames=4, image_size=16)
    assert kept_indices(frames, frame_mask) == [0, 30, 60, 90]


def test_short_side_resize_and_centre_crop(tmp_path: Path) -> None:
    """80x48 -> short side 24 gives 40x24, the crop keeps original columns 16..63: the edge bands go."""
    width, height = 80, 48
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (40, 60, 220)  # blue centre
    pixels[:, :12] = (230, 30, 30)  # red left edge
    pixels[:, -12:] = (30, 220, 30)  # green right edge
    path = tmp_path / "wide.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=4, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")), *stream.encode()]:
            container.mux(packet)
    frames, frame_mask = decode_clip(path, max_frames=2, image_size=24)
    assert frames.shape == (2, 24, 24, 3) and frame_mask.tolist() == [True, False]
    kept = frames[0].astype(int)
    assert np.abs(kept - np.array([40, 60, 220])).max() < 25
    assert kept[..., 0].max() < 100 and kept[..., 1].max() < 120  # no red or green edge left


def test_bad_files_raise_naming_the_file(tmp_path: Path, ten_second_clip: Path) -> None:
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    truncated = tmp_path / "truncated.mp4"
    data = ten_second_clip.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (tmp_path / "missing.mp4", zero, text, truncated):
        with pytest.raises(VideoDecodeError, match=path.name) as info:
            decode_clip(path, max_frames=4, image_size=16)
        assert str(path) in str(info.value)


def test_bad_arguments_are_value_errors(ten_second_clip: Path) -> None:
    with pytest.raises(ValueError):
        decode_clip(ten_second_clip, max_frames=0, image_size=16)
    with pytest.raises(ValueError):
        decode_clip(ten_second_clip, max_frames=4, image_size=16, sampling="random")  # type: ignore[arg-type]


# ------------------------------------------------------------------ skipping non-reference frames
def _decoded_frame_count(path: Path, skip_frame: str) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = skip_frame
        return sum(1 for _ in container.decode(stream))


@pytest.fixture(scope="module")
def b_frame_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s at 10 fps with x264's default B-frames, some of which nothing references."""
    path = write_index_clip(tmp_path_factory.mktemp("clips") / "bframes.mp4", num_frames=100, preset="medium")
    assert _decoded_frame_count(path, "NONREF") < _decoded_frame_count(path, "DEFAULT") == 100
    return path


def _decode_both(monkeypatch: pytest.MonkeyPatch, path: Path, **kwargs) -> tuple[tuple, tuple, list[int]]:
    """decode_clip with and without skipping, and how many frames each decoded."""
    counts = []
    original = frame_grab._frame_time
    for skip in (True, False):
        calls = []
        monkeypatch.setattr(frame_grab, "_frame_time", lambda *a: calls.append(1) or original(*a))
        result = decode_clip(path, image_size=16, skip_nonref=skip, **kwargs)
        counts.append(len(calls))
        if skip:
            skipped = result
        else:
            full = result
    return skipped, full, counts


@pytest.mark.parametrize("kwargs", [
    dict(max_frames=4), dict(max_frames=10, sampling="head"), dict(max_frames=3, sampling="tail"),
    dict(max_frames=6, fps=2.0), dict(max_frames=4, start=2, end=7),
])
def test_skipping_nonreference_frames_keeps_the_same_frames(b_frame_clip: Path, monkeypatch: pytest.MonkeyPatch,
                                                           kwargs: dict) -> None:
    skipped, full, (skipped_count, full_count) = _decode_both(monkeypatch, b_frame_clip, **kwargs)
    np.testing.assert_array_equal(skipped[0], full[0])
    np.testing.assert_array_equal(skipped[1], full[1])
    assert skipped_count < full_count  # frames were really left undecoded


def test_skipping_expected_frames(b_frame_clip: Path) -> None:
    frames, frame_mask = decode_clip(b_frame_clip, max_frames=4, image_size=16)
    assert kept_indices(frames, frame_mask) == [0, 30, 60, 90]


def test_header_too_long_with_b_frames(b_frame_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A header that claims 25 s (targets past the end): same frames with and without skipping."""
    _claim_duration(monkeypatch, 25.0)
    skipped, full, _ = _decode_both(monkeypatch, b_frame_clip, max_frames=4)
    np.testing.assert_array_equal(skipped[0], full[0])
    assert kept_indices(*skipped) == [0, 30, 60, 90]


class _FakeFrame:
    time_base = Fraction(1, 10)

    def __init__(self, index: int) -> None:
        self.index, self.pts, self.time = index, index, index / 10

    def to_image(self):
        from PIL import Image

        return Image.new("RGB", (16, 16), index_colour(self.index))


class _FakeStream:
    """Ten frames at 10 fps in display order; odd frames are non-reference (dropped under NONREF)."""

    time_base = Fraction(1, 10)

    def __init__(self) -> None:
        self.codec_context = type("Codec", (), {"skip_frame": "DEFAULT"})()
        self.decoded: list[int] = []

    def packets(self):
        for index in range(10):
            yield type("Packet", (), {"pts": index, "decode": lambda _, i=index: self._decode(i)})()

    def _decode(self, index: int) -> list[_FakeFrame]:
        if index % 2 and self.codec_context.skip_frame == "NONREF":
            return []
        self.decoded.append(index)
        return [_FakeFrame(index)]


def _grab(targets: list[float], skip: bool) -> tuple[list[np.ndarray], list[int]]:
    stream = _FakeStream()
    container = type("Container", (), {"demux": lambda _, s: s.packets()})()
    timing = video._StreamTiming(origin=0.0, duration=1.0, frame_interval=0.1)
    to_pixels = video.FrameConverter(16, resize="pil")  # the fake frames only make PIL images
    return frame_grab._grab_frames(container, stream, timing, targets, to_pixels, skip_nonref=skip), stream.decoded


def test_skip_decisions_on_a_known_stream() -> None:
    """Non-reference packets before the next target's window are dropped, the one a target needs is not;
    if the stream ends with a skipped frame where the last frame is needed, the pass is given up."""
    kept, decoded = _grab([0.0, 0.5, 0.9], skip=True)
    assert decoded == [0, 2, 4, 5, 6, 8, 9]  # 5 and 9 are targets; 1, 3 and 7 were never decoded
    assert [read_index(frame) for frame in kept] == [0, 5, 9]
    full, _ = _grab([0.0, 0.5, 0.9], skip=False)
    np.testing.assert_array_equal(np.stack(kept), np.stack(full))
    with pytest.raises(frame_grab._NeedsFullDecode):  # 1.05 s: past the end, the last frame (9, skipped) is due
        _grab([0.0, 1.05], skip=True)
    kept, _ = _grab([0.0, 1.05], skip=False)
    assert [read_index(frame) for frame in kept] == [0, 9]


def test_skipping_with_variable_frame_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    times_ms = [500 * k for k in range(10)] + [5000 + 50 * k for k in range(100)]
    path = write_index_clip(tmp_path / "vfr.mp4", num_frames=len(times_ms), pts_ms=times_ms, preset="medium")
    skipped, full, (skipped_count, full_count) = _decode_both(monkeypatch, path, max_frames=10, sampling="head")
    np.testing.assert_array_equal(skipped[0], full[0])
    assert [times_ms[i] for i in kept_indices(*skipped)] == list(range(0, 10_000, 1000))



class _ReorderingStream:
    """A B-pyramid stream as a decoder sees it: decode order I0 P4 B2 b1 b3 P8 B6 b5 b7 P12 ... (frame i at
    i / 10 s; the odd frames are non-reference, dropped under NONREF), frames come out in time order two frames
    late (as H.264's reorder buffer does), a last packet without pts flushes. ``lost``: frames that never come
    out (as if their packet did not decode)."""

    time_base = Fraction(1, 10)

    def __init__(self, num_frames: int = 17, lost: frozenset[int] = frozenset()) -> None:
        self.codec_context = type("Codec", (), {"skip_frame": "DEFAULT"})()
        self.decoded: list[int] = []
        self.lost, self.buffer = lost, []
        self.order = [0]
        for anchor in range(4, num_frames + 3, 4):
            self.order += [index for index in (anchor, anchor - 2, anchor - 3, anchor - 1) if index < num_frames]

    def packets(self):
        for index in self.order:
            yield type("Packet", (), {"pts": index, "decode": lambda _, i=index: self._decode(i)})()
        yield type("Packet", (), {"pts": None, "decode": lambda _: self._flush()})()

    def _decode(self, index: int) -> list[_FakeFrame]:
        if index % 2 and self.codec_context.skip_frame == "NONREF":
            return []
        self.decoded.append(index)
        if index not in self.lost:
            self.buffer.append(index)
        self.buffer.sort()
        out = []
        while len(self.buffer) > 2:
            out.append(_FakeFrame(self.buffer.pop(0)))
        return out

    def _flush(self) -> list[_FakeFrame]:
        out, self.buffer = [_FakeFrame(index) for index in self.buffer], []
        return out


def _grab_reordered(targets: list[float], skip: bool, **kwargs) -> tuple[list[int], list[int]]:
    stream = _ReorderingStream(**kwargs)
    container = type("Container", (), {"demux": lambda _, s: s.packets()})()
    timing = video._StreamTiming(origin=0.0, duration=1.7, frame_interval=0.1)
    to_pixels = video.FrameConverter(16, resize="pil")
    kept = frame_grab._grab_frames(container, stream, timing, targets, to_pixels, skip_nonref=skip)
    return [read_index(frame) for frame in kept], stream.decoded



def test_skip_rule_on_a_reordering_stream() -> None:
    """Non-reference packets are dropped only when their time is before the next target's window (targets 0.0,
    0.2, 0.5, 1.3 s; windows from 0.05 s earlier). Worked by hand through the decode order with frames coming
    out two late: b1 (0.1 < 0.15), b7, b9, b11 (< 1.25) are dropped; b3 is decoded (0.3 >= 0.15 while the
    0.2 s frame has not come out yet), b5 and b13 are targets' frames."""
    targets = [0.0, 0.2, 0.5, 1.3]
    kept, decoded = _grab_reordered(targets, skip=True)
    full, every = _grab_reordered(targets, skip=False)
    assert kept == full == [0, 2, 5, 13]
    assert every == [0, 4, 2, 1, 3, 8, 6, 5, 7, 12, 10, 9, 11, 16, 14, 13]
    assert decoded == [0, 4, 2, 3, 8, 6, 5, 12, 10, 16, 14, 13]

#: clips with different frame structures (index-coloured, 10 fps): B-pyramids, plain B-frames, none, short and
#: long GOPs, variable frame rate, MPEG-4 part 2 and HEVC B-frames
_STRUCTURE_CLIPS = {
    "x264-default-gop8": dict(preset="medium"),
    "x264-default-gop250": dict(preset="medium", gop_size=250),
    "x264-bframes3-no-pyramid": dict(preset="medium", options={"x264-params": "bframes=3:b-pyramid=none:b-adapt=0"}),
    "x264-bframes5-strict-pyramid": dict(preset="medium", gop_size=40,
                                         options={"x264-params": "bframes=5:b-pyramid=strict:b-adapt=0"}),
    "x264-bframes16-normal-pyramid": dict(preset="medium", gop_size=60,
                                          options={"x264-params": "bframes=16:b-pyramid=normal:b-adapt=0"}),
    "x264-no-bframes": dict(preset="medium", options={"bf": "0"}),
    "x264-vfr": dict(preset="medium", gop_size=30,
                     pts_ms=[130 * k for k in range(20)] + [2600 + 45 * k for k in range(50)]
                     + [4850 + 210 * k for k in range(30)]),
    "mpeg4-bframes2": dict(codec="mpeg4", options={"bf": "2", "qscale": "2"}),
    "hevc-default": dict(codec="libx265", gop_size=32, options={"x265-params": "log-level=error"}),
}
_SAMPLINGS = [
    dict(max_frames=4), dict(max_frames=12), dict(max_frames=10, sampling="head"), dict(max_frames=3, sampling="tail"),
    dict(max_frames=8, fps=3.0), dict(max_frames=100, fps=10.0), dict(max_frames=60, fps=7.0),
    dict(max_frames=4, start=2, end=7), dict(max_frames=5, fps=2.0, start=1.5),
]


@pytest.fixture(scope="module")
def structure_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("structures")
    return {name: write_index_clip(folder / f"{name}.mp4", num_frames=len(spec.get("pts_ms", [])) or 100, **spec)
            for name, spec in _STRUCTURE_CLIPS.items()}


@pytest.mark.parametrize("clip", list(_STRUCTURE_CLIPS))
def test_skipping_keeps_the_same_frames_on_every_structure(structure_clips: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch, clip: str) -> None:
    """skip_nonref=True and False give the same bytes for every sampling on every frame structure, and the
    kept frames are the ones at the targets (index colours)."""
    path = structure_clips[clip]
    times = _STRUCTURE_CLIPS[clip].get("pts_ms")
    check_indices = times is None and not clip.startswith("mpeg4")  # MPEG-4 part 2 blurs the index colours
    skipped_total = full_total = 0
    for kwargs in _SAMPLINGS:
        skipped, full, (skipped_count, full_count) = _decode_both(monkeypatch, path, **kwargs)
        np.testing.assert_array_equal(skipped[0], full[0], err_msg=str(kwargs))
        np.testing.assert_array_equal(skipped[1], full[1], err_msg=str(kwargs))
        skipped_total, full_total = skipped_total + skipped_count, full_total + full_count
        if kwargs == dict(max_frames=100, fps=10.0) and check_indices:
            assert kept_indices(*skipped) == list(range(100))  # every frame, each once, in order
        if kwargs == dict(max_frames=4) and check_indices:
            assert kept_indices(*skipped) == [0, 30, 60, 90]
    assert skipped_total <= full_total


def test_skipping_keeps_the_same_frames_on_the_benchmark_clip(tmp_path: Path) -> None:
    """benchmarks/decode.py's own clip (15 s, 30 fps, x264 defaults, keyframes at 0 and 250): same bytes with
    and without skipping, for the benchmark's call and denser ones."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "decode_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "decode.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    path = benchmark.write_benchmark_clip(tmp_path / "bench.mp4")
    for kwargs in (dict(max_frames=12), dict(max_frames=12, fps=2.0), dict(max_frames=40, fps=3.0, start=4.5)):
        skipped = decode_clip(path, image_size=64, skip_nonref=True, **kwargs)
        full = decode_clip(path, image_size=64, skip_nonref=False, **kwargs)
        np.testing.assert_array_equal(skipped[0], full[0], err_msg=str(kwargs))
        np.testing.assert_array_equal(skipped[1], full[1], err_msg=str(kwargs))


@pytest.mark.parametrize("options", [{}, {"bf": "0"}, {"x264-params": "bframes=5:b-pyramid=strict:b-adapt=0"}])
def test_jumping_to_keyframes_keeps_the_same_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    options: dict[str, str]) -> None:
    """20 s at 5 fps with a keyframe every second and sparse targets: the decoder jumps over whole GOPs to the
    keyframe before each target (fewer frames decoded) and keeps the same bytes as a full decode."""
    path = write_index_clip(tmp_path / "short_gops.mp4", num_frames=100, rate=5, preset="medium", gop_size=5,
                            options={"sc_threshold": "0", **options})
    jumps = []
    original = frame_grab._jump_index
    monkeypatch.setattr(frame_grab, "_jump_index", lambda *a: jumps.append(original(*a)) or jumps[-1])
    for kwargs in (dict(max_frames=4), dict(max_frames=3, sampling="head", fps=0.25), dict(max_frames=5, start=3.3),
                   dict(max_frames=6, fps=0.3)):
        jumps.clear()
        skipped, full, (skipped_count, full_count) = _decode_both(monkeypatch, path, **kwargs)
        np.testing.assert_array_equal(skipped[0], full[0], err_msg=str(kwargs))
        np.testing.assert_array_equal(skipped[1], full[1], err_msg=str(kwargs))
        assert any(jumps), kwargs  # whole GOPs were jumped over
        assert skipped_count < full_count / 2, kwargs
    frames, frame_mask = decode_clip(path, max_frames=4, image_size=16)
    assert kept_indices(frames, frame_mask) == [0, 30, 60, 95]  # times 0, 6, 12, 19 s


def test_no_jump_to_a_keyframe_with_leading_frames() -> None:
    """The jump rule on hand-made packet lists (0.1 s ticks, window 1.5 s, frame 0 decoded): a closed keyframe
    before the window is jumped to; one followed in decode order by a frame shown before it (open GOP) is not,
    nor one when a frame before it in decode order is shown inside the window."""
    def packet(pts: int, key: bool = False):
        return type("Packet", (), {"pts": pts, "dts": pts - 1, "is_keyframe": key})()

    behind = frame_grab._PtsBound()
    behind.add(0)
    closed = [packet(1), packet(2), packet(3, key=True), packet(4), packet(5), packet(20)]
    ahead = deque()
    assert frame_grab._jump_index(iter(closed), ahead, behind, 1.5, 0.1, 0.0) == 2
    open_gop = [packet(1), packet(2), packet(4, key=True), packet(3), packet(5), packet(20)]
    ahead = deque()
    assert frame_grab._jump_index(iter(open_gop), ahead, behind, 1.5, 0.1, 0.0) == 0
    late = [packet(1), packet(16), packet(17, key=True), packet(18), packet(20)]  # 1.6 s is past the window
    ahead = deque()
    assert frame_grab._jump_index(iter(late), ahead, behind, 1.5, 0.1, 0.0) == 0


# ------------------------------------------------------------------ bad files vs programming errors
@pytest.mark.parametrize("error", [IndexError, ZeroDivisionError, ValueError, TypeError])
def test_programming_errors_are_not_bad_videos(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch,
                                               error: type[Exception]) -> None:
    """A bug in our own decoding code raises as itself; it is never turned into a skipped "bad video"."""
    def broken(*args, **kwargs):
        raise error("bug in our code")

    monkeypatch.setattr(video, "sample_frame_indices", broken)
    with pytest.raises(error, match="bug in our code"):
        decode_clip(ten_second_clip, max_frames=4, image_size=16)


def test_decoder_errors_mid_stream_are_bad_videos(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What PyAV raises for broken data (InvalidDataError is also a ValueError) names the file."""
    def corrupt(*args, **kwargs):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(video.FrameConverter, "__call__", corrupt)
    with pytest.raises(VideoDecodeError, match="ten.mp4.*InvalidDataError"):
        decode_clip(ten_second_clip, max_frames=4, image_size=16)
