"""PyAV decoding and the reference's 1-fps frame sampling, on clips written by the tests."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from xclip_pl.data import video
from xclip_pl.data.video import VideoDecodeError, decode_clip, sample_frame_indices


def index_colour(index: int) -> tuple[int, int, int]:
    """A flat colour that encodes a frame index 0..99 (tens in red, units in green, steps of 20)."""
    return 40 + 20 * (index // 10), 40 + 20 * (index % 10), 128


def read_index(frame: np.ndarray) -> int:
    """Inverse of index_colour, tolerant to compression noise (+-9 levels)."""
    red, green = frame[..., 0].mean(), frame[..., 1].mean()
    return int(round((red - 40) / 20)) * 10 + int(round((green - 40) / 20))


def write_index_clip(path: Path, num_frames: int, rate: int = 10, codec: str = "libx264",
                     size: tuple[int, int] = (64, 48), pts_ms: list[int] | None = None) -> Path:
    """A clip whose frame i is a flat index_colour(i); optional explicit timestamps in ms (VFR)."""
    width, height = size
    options = {"crf": "12", "preset": "ultrafast"} if codec == "libx264" else {"crf": "20", "b": "0"}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = 8
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


def test_only_kept_frames_are_converted(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = video.resize_center_crop
    monkeypatch.setattr(video, "resize_center_crop", lambda image, size: calls.append(1) or original(image, size))
    decode_clip(ten_second_clip, max_frames=4, image_size=16)
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


def test_header_duration_too_long_is_corrected(ten_second_clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = video._stream_timing
    monkeypatch.setattr(video, "_stream_timing",
                        lambda c, s: video._StreamTiming(original(c, s).origin, 25.0, original(c, s).frame_interval))
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
