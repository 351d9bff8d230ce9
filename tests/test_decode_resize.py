"""``resize``: torch's antialiased bicubic on a batch of the kept frames (default) and swscale's bicubic on the
planar RGB frame, against PIL's bicubic on the RGB image (the reference's bytes). The frames chosen must not
depend on it (index-coloured clips say which frame was kept), and the pixels must stay close to PIL's (PIL is
the independent computation)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from test_video import kept_indices, write_index_clip

from xclip_pl.data import video
from xclip_pl.data.cache import ClipLoader
from xclip_pl.data.records import VideoRecord
from xclip_pl.data.video import FrameConverter, decode_clip, resize_center_crop

#: (mean, share of values more than one level apart, max) allowed from PIL's bytes. Measured on these textured
#: clips (sines, noise, a saturated block): ``swscale`` mean 0.21-0.31 levels, at most 1 % above one level, at
#: most 9 levels (at the block's edges: swscale's cubic, a = -0.6, rings more than PIL's, a = -0.5); ``torch``
#: (PIL's filter in integer arithmetic) mean <= 0.01, at most 2 levels. A wrong crop offset, channel order or
#: filter gives tens of levels.
BOUNDS = {"swscale": (0.4, 0.02, 12), "torch": (0.02, 0.001, 2)}


def textured_frames(width: int, height: int, count: int = 3) -> list[np.ndarray]:
    """uint8 [h, w, 3] frames: three sine gratings (one per channel), noise, and a saturated red block."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 24, size=(height, width, 3), dtype=np.uint8)
    frames = []
    for index in range(count):
        pixels = np.stack([127 + 100 * np.sin(xs / 7.0 + index), 127 + 100 * np.sin(ys / 5.0 - index),
                           127 + 100 * np.sin((xs + ys) / 11.0)], axis=-1).astype(np.uint8) + noise
        pixels[height // 3:height // 2, width // 4:width // 2] = (250, 20, 20)
        frames.append(pixels)
    return frames


def write_lossless(path: Path, frames: list[np.ndarray], rate: int = 1) -> Path:
    height, width, _ = frames[0].shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize(("width", "height", "image_size"), [
    (320, 240, 224),  # the benchmark's shape: downscale, landscape crop
    (1280, 720, 224),  # HD: 3.2x down
    (240, 320, 224),  # portrait: the crop is vertical
    (64, 48, 224),  # upscale
    (320, 240, 100),
])
@pytest.mark.parametrize("color_matrix", ["tagged", "bt601"])
@pytest.mark.parametrize("resize", ["torch", "swscale"])
def test_fast_resizes_are_close_to_pil(tmp_path: Path, width: int, height: int, image_size: int,
                                       color_matrix: str, resize: str) -> None:
    path = write_lossless(tmp_path / "textured.mp4", textured_frames(width, height))
    fast, fast_mask = decode_clip(path, 3, image_size, resize=resize, color_matrix=color_matrix)
    faithful, faithful_mask = decode_clip(path, 3, image_size, resize="pil", color_matrix=color_matrix)
    assert fast.shape == faithful.shape == (3, image_size, image_size, 3) and fast_mask.all() and faithful_mask.all()
    difference = np.abs(fast.astype(int) - faithful.astype(int))
    mean_bound, share_above_one_bound, max_bound = BOUNDS[resize]
    assert difference.mean() <= mean_bound
    assert (difference > 1).mean() <= share_above_one_bound
    assert difference.max() <= max_bound


def test_pil_path_is_pil_bicubic_of_the_rgb_frame(tmp_path: Path) -> None:
    """``resize="pil"`` is byte for byte PIL's resize + crop of the decoded RGB frame (torchvision arithmetic:
    320x240 -> 298x224, columns 37..260)."""
    path = write_lossless(tmp_path / "textured.mp4", textured_frames(320, 240, count=1))
    with av.open(str(path)) as container:
        rgb = next(container.decode(video=0)).to_image()
    expected = np.asarray(rgb.resize((298, 224), Image.BICUBIC))[:, 37:261]
    frames, _ = decode_clip(path, 1, 224, resize="pil")
    np.testing.assert_array_equal(frames[0], expected)


@pytest.mark.parametrize("resize", ["torch", "swscale"])
def test_without_a_resize_all_give_the_same_bytes(tmp_path: Path, resize: str) -> None:
    """Short side already ``image_size``: only the crop, and every path's RGB is the same swscale conversion."""
    path = write_lossless(tmp_path / "textured.mp4", textured_frames(64, 48))
    for color_matrix in ("tagged", "bt601"):
        fast, _ = decode_clip(path, 3, 48, resize=resize, color_matrix=color_matrix)
        faithful, _ = decode_clip(path, 3, 48, resize="pil", color_matrix=color_matrix)
        np.testing.assert_array_equal(fast, faithful)


@pytest.mark.parametrize("frame_times", ["timestamps", "reference"])
@pytest.mark.parametrize("preset", ["ultrafast", "medium"])  # no B-frames / x264's default B-frames
@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"max_frames": 4}, [0, 30, 60, 90]),
    ({"max_frames": 3, "sampling": "tail"}, [70, 80, 90]),
    ({"max_frames": 4, "start": 2, "end": 7}, [20, 30, 50, 70]),  # candidates 2..7 s, floor(linspace(0, 5, 4))
])
@pytest.mark.parametrize("resize", ["torch", "swscale"])
def test_fast_resizes_keep_the_frames_at_the_right_times(tmp_path: Path, frame_times: str, preset: str, kwargs: dict,
                                                         expected: list[int], resize: str) -> None:
    """Frame i of the clip is a flat colour that encodes i; 10 s at 10 fps, resized 64x48 -> 75x64 -> 64."""
    path = write_index_clip(tmp_path / "index.mp4", num_frames=100, preset=preset)
    frames, frame_mask = decode_clip(path, image_size=64, frame_times=frame_times, resize=resize, **kwargs)
    assert kept_indices(frames, frame_mask) == expected
    faithful, _ = decode_clip(path, image_size=64, frame_times=frame_times, resize="pil", **kwargs)
    assert np.abs(frames.astype(int) - faithful.astype(int)).max() <= 1  # flat colours: no edge to ring at


def test_unknown_resize_is_a_value_error(tmp_path: Path) -> None:
    path = write_index_clip(tmp_path / "index.mp4", num_frames=10)
    with pytest.raises(ValueError, match="resize"):
        decode_clip(path, 2, 16, resize="bilinear")  # type: ignore[arg-type]


def test_resize_reaches_decode_clip_and_the_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_index_clip(tmp_path / "index.mp4", num_frames=30)
    record = VideoRecord("v", path, ["a caption"])
    calls = []
    original = video.decode_clip
    monkeypatch.setattr(video, "decode_clip", lambda *a, **k: calls.append(k) or original(*a, **k))
    for resize in ("torch", "swscale", "pil"):
        ClipLoader(4, 32, resize=resize).load(record)
        assert calls[-1]["resize"] == resize
    keys = {resize: ClipLoader(4, 32, cache_dir=tmp_path, resize=resize).cache_key(record)
            for resize in ("torch", "swscale", "pil")}
    assert len(set(keys.values())) == 3  # a changed resize misses the frame cache


def test_torch_resize_gives_every_frame_its_own_pixels() -> None:
    """One converter resizes every frame of a decode into the same output buffer (reallocated when the frame
    size changes): each frame returned must stay PIL's resize + crop of its own frame after the later calls."""
    shapes = [(320, 240), (320, 240), (240, 320), (1280, 720), (320, 240), (320, 240), (224, 224)]  # (w, h)
    images = [textured_frames(width, height, count=index + 1)[index] for index, (width, height) in enumerate(shapes)]
    converter = FrameConverter(64, resize="torch")
    returned = [converter(av.VideoFrame.from_ndarray(pixels, format="rgb24")) for pixels in images]
    for got, pixels in zip(returned, images):
        want = resize_center_crop(Image.fromarray(pixels), 64)  # rgb24 in, rgb24 out: no colour conversion
        assert got.shape == (64, 64, 3) and np.abs(got.astype(int) - want.astype(int)).max() <= BOUNDS["torch"][2]


def test_torch_resize_without_the_out_op_gives_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A torch without the private ``out=`` op falls back to ``F.interpolate``: the same pixels."""
    from xclip_pl.data import frame_convert

    assert frame_convert._BICUBIC_AA_OUT is not None  # this torch has it: the default path is the buffered one
    path = write_lossless(tmp_path / "textured.mp4", textured_frames(320, 240))
    buffered, _ = decode_clip(path, 3, 100)
    monkeypatch.setattr(frame_convert, "_BICUBIC_AA_OUT", None)
    np.testing.assert_array_equal(decode_clip(path, 3, 100)[0], buffered)
