"""``frame_times: reference``: the reference's OpenCV frame arithmetic (``int(fps)``, whole seconds, frame
indices), checked against a transcription of the reference loaders on clips whose frames carry their index."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from xclip_pl.data import reference_frames as reference_frames_module
from xclip_pl.data import video
from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.datamodule import VideoTextDataModule
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import VideoDecodeError, decode_clip

SIDE, CELL = 32, 8  # 4 x 4 cells of 8 x 8 pixels; cell k is white when bit k of the frame index is set
NTSC = Fraction(30000, 1001)  # 29.97 fps


def barcode(index: int) -> np.ndarray:
    """uint8 [32, 32, 3]: frame ``index`` as 16 black / white cells (bit k in cell k, row-major)."""
    pixels = np.zeros((SIDE, SIDE, 3), np.uint8)
    for bit in range(16):
        if index >> bit & 1:
            row, col = divmod(bit, SIDE // CELL)
            pixels[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = 255
    return pixels


def read_barcode(frame: np.ndarray) -> int:
    """Inverse of :func:`barcode` (each cell's mean against mid grey)."""
    cells = frame.astype(float).mean(axis=2).reshape(SIDE // CELL, CELL, SIDE // CELL, CELL).mean(axis=(1, 3))
    return sum(1 << bit for bit, value in enumerate(cells.reshape(-1)) if value > 128)


def write_barcode_clip(path: Path, num_frames: int, rate: Fraction | int) -> Path:
    """A constant-frame-rate H.264 clip (lossless, no B-frames) whose frame i shows barcode(i)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        for index in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(barcode(index), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def reference_frames(frame_count: int, fps: float, start: float | None, end: float | None, max_frames: int,
                     readable: int | None = None) -> list[int]:
    """The frame indices the reference returns, transcribed from CLIP4Clip / X-CLIP: the DiDeMo / ActivityNet
    loaders' ``_get_rawvideo`` (int() of the times, clamp, swap, +1), ``RawVideoExtractorCV2.video_to_tensor``
    with ``sample_fp=1`` (``cap.read()`` fails from frame ``readable`` on) and ``slice_framepos=2``."""
    readable = frame_count if readable is None else readable
    start_time = end_time = None
    if start is not None:  # _get_rawvideo
        start_time, end_time = int(start), int(end)
        start_time = start_time if start_time >= 0. else 0.
        end_time = end_time if end_time >= 0. else 0.
        if start_time > end_time:
            start_time, end_time = end_time, start_time
        elif start_time == end_time:
            end_time = end_time + 1
    fps = int(fps)  # video_to_tensor
    total_duration = (frame_count + fps - 1) // fps
    start_sec, end_sec = 0, total_duration
    if start_time is not None:
        start_sec, end_sec = start_time, end_time if end_time <= total_duration else total_duration
    interval = fps // 1
    inds = [ind for ind in np.arange(0, fps, interval)][:1]
    ret, read = True, []
    for sec in np.arange(start_sec, end_sec + 1):
        if not ret:
            break
        sec_base = int(sec * fps)
        for ind in inds:
            ret = sec_base + ind < readable  # cap.set(CAP_PROP_POS_FRAMES, sec_base + ind); cap.read()
            if not ret:
                break
            read.append(int(sec_base + ind))
    if len(read) > max_frames:  # slice_framepos == 2
        read = [read[i] for i in np.linspace(0, len(read) - 1, num=max_frames, dtype=int)]
    return read


CLIPS = {"25": (25, 1000), "29.97": (NTSC, 1199), "30": (30, 1200)}  # rate, frames: 40 s each


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Fraction | int, int]]:
    folder = tmp_path_factory.mktemp("frame_times")
    return {name: (write_barcode_clip(folder / f"{name}.mp4", count, rate), rate, count)
            for name, (rate, count) in CLIPS.items()}


def decoded_indices(path: Path, **kwargs) -> list[int]:
    frames, frame_mask = decode_clip(path, image_size=SIDE, **kwargs)
    assert not frames[~frame_mask].any()
    return [read_barcode(frame) for frame in frames[frame_mask]]


def test_barcode_clip_round_trip(clips: dict) -> None:
    path, rate, count = clips["29.97"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == NTSC and stream.frames == count
        assert [read_barcode(f.to_ndarray(format="rgb24")) for f in container.decode(stream)] == list(range(count))


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("max_frames", [4, 64])
@pytest.mark.parametrize(("start", "end"), [
    (None, None),  # MSR-VTT / MSVD / LSMDC: the whole video
    (0.0, 31.0),  # DiDeMo
    (0.0, 41.0),  # ActivityNet: [0, ceil(duration)], capped at ceil(frame_count / int(fps))
    (2.7, 9.9),  # truncated to whole seconds 2..9
    (5.5, 5.9),  # equal after truncation: end + 1
    (9.0, 3.0),  # reversed: swapped
])
def test_reference_frames_match_the_reference_formulas(clips: dict, clip: str, max_frames: int,
                                                       start: float | None, end: float | None) -> None:
    path, rate, count = clips[clip]
    expected = reference_frames(count, float(rate), start, end, max_frames)
    assert decoded_indices(path, max_frames=max_frames, start=start, end=end, frame_times="reference") == expected


def test_candidate_count_at_ntsc_rate(clips: dict) -> None:
    """A 40 s clip at 29.97 fps: the reference reads seconds of 29 frames, 42 candidates; timestamps give 41.
    At 25 and 30 fps both modes give the same frames."""
    path, rate, count = clips["29.97"]
    reference = decoded_indices(path, max_frames=64, frame_times="reference")
    timestamps = decoded_indices(path, max_frames=64, frame_times="timestamps")
    assert len(reference) == 42 and reference == [29 * sec for sec in range(42)]
    assert len(timestamps) == 41
    assert abs(reference[41] / float(NTSC) - 41) > 1.3  # the last reference frame is ~1.3 s early
    for name in ("25", "30"):
        path, rate, count = clips[name]
        assert decoded_indices(path, max_frames=64, frame_times="reference") == \
            decoded_indices(path, max_frames=64, frame_times="timestamps") == list(range(0, count, int(rate)))


def test_stream_shorter_than_its_frame_count(clips: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container claims 45 more frames than the stream holds: the reference's reads fail at the true end
    and its linspace runs over the frames it really read."""
    path, rate, count = clips["25"]
    original = reference_frames_module._reference_frame_count
    monkeypatch.setattr(reference_frames_module, "_reference_frame_count", lambda *args: original(*args) + 45)
    expected = reference_frames(count + 45, float(rate), None, None, 4, readable=count)
    assert expected == [0, 325, 650, 975]  # not [0, 350, 675, 1025] (42 hypothetical candidates)
    assert decoded_indices(path, max_frames=4, frame_times="reference") == expected


def test_frame_rate_below_one_fps(tmp_path: Path) -> None:
    """int(0.5 fps) = 0: the reference divides by zero; we name the file and the switch."""
    path = write_barcode_clip(tmp_path / "slow.mp4", 6, Fraction(1, 2))
    with pytest.raises(VideoDecodeError, match=r"slow\.mp4.*frame_times"):
        decode_clip(path, max_frames=4, image_size=SIDE, frame_times="reference")
    frames, frame_mask = decode_clip(path, max_frames=4, image_size=SIDE, frame_times="timestamps")
    assert frame_mask.all()  # the default has no trouble with it


def test_reference_needs_whole_frames_per_second(clips: dict) -> None:
    path, _, _ = clips["25"]
    with pytest.raises(ValueError, match="fps"):
        decode_clip(path, max_frames=4, image_size=SIDE, fps=1.5, frame_times="reference")
    with pytest.raises(ValueError, match="frame_times"):
        decode_clip(path, max_frames=4, image_size=SIDE, frame_times="opencv")  # type: ignore[arg-type]
    assert decoded_indices(path, max_frames=3, fps=2.0, sampling="head", frame_times="reference") == \
        reference_frames_two_per_second(25)[:3]


def reference_frames_two_per_second(rate: int) -> list[int]:
    """``video_to_tensor(sample_fp=2)``: ``interval = fps // 2``, ``inds = arange(0, fps, interval)[:2]``."""
    interval = rate // 2
    inds = list(range(0, rate, interval))[:2]
    return [sec * rate + ind for sec in range(3) for ind in inds]


# ------------------------------------------------------------------ the switches reach decode_clip
def test_switches_flow_from_the_datamodule_to_decode_clip(clips: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = clips["25"]
    module = VideoTextDataModule(root=str(tmp_path), max_frames=4, image_size=SIDE, frame_times="reference",
                                 color_matrix="bt601", frame_cache=True, frame_cache_dir=str(tmp_path / "cache"))
    loader = module._clip_loader()
    calls = []
    original = video.decode_clip
    monkeypatch.setattr(video, "decode_clip", lambda *a, **k: calls.append(k) or original(*a, **k))
    record = VideoRecord("v", path, ["a caption"])
    frames, mask, ok = loader.load(record)
    assert ok and calls[-1]["frame_times"] == "reference" and calls[-1]["color_matrix"] == "bt601"
    assert [read_barcode(f) for f in frames[mask]] == reference_frames(1000, 25.0, None, None, 4)
    keys = {ClipLoader(4, SIDE, cache_dir=tmp_path, frame_times=times, color_matrix=matrix).cache_key(record)
            for times in ("timestamps", "reference") for matrix in ("tagged", "bt601")}
    assert len(keys) == 4  # a changed switch misses the frame cache


def test_reference_frame_times_need_a_whole_fps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="data.fps"):
        VideoTextDataModule(root=str(tmp_path), fps=1.5, frame_times="reference")


# ------------------------------------------------------------------ ActivityNet's window
def test_activitynet_reference_window_is_the_ceiled_json_duration(tmp_path: Path) -> None:
    """The reference decodes ActivityNet over [0, ceil(duration)] seconds (``duration`` of the caption JSON);
    at 29.97 fps its 29-frame "seconds" would otherwise run ~3 % past it. The default keeps the whole video."""
    from helpers_media import write_video

    from datamodules.activitynet import ActivityNetDataModule

    captions = {"v_a": {"duration": 82.73, "sentences": ["A man waves."]},
                "v_b": {"duration": 7.0, "sentences": ["A dog runs."]}}
    for name in ("train", "val"):
        (tmp_path / f"{name}_ids.json").write_text(json.dumps(list(captions)))
    for name in ("train.json", "val_1.json"):
        (tmp_path / name).write_text(json.dumps(captions))
    for key in captions:
        write_video(tmp_path / "videos" / f"{key}.mp4", num_frames=2)
    reference = ActivityNetDataModule(root=str(tmp_path), frame_times="reference").load_records("val")
    assert [(r.start, r.end) for r in reference] == [(0.0, 83.0), (0.0, 7.0)]
    default = ActivityNetDataModule(root=str(tmp_path)).load_records("val")
    assert [(r.start, r.end) for r in default] == [(None, None), (None, None)]
    del captions["v_b"]["duration"]
    (tmp_path / "val_1.json").write_text(json.dumps(captions))
    with pytest.raises(ValueError, match=r"val_1\.json.*'v_b'.*duration"):
        ActivityNetDataModule(root=str(tmp_path), frame_times="reference").load_records("val")
