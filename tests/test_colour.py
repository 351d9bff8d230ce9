"""``color_matrix``: the stream's tagged YUV->RGB matrix (default) or the reference's BT.601 (OpenCV converts
with swscale's defaults and ignores the tag). Expected pixels come from numpy conversions of the decoded
yuv420p planes."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from xclip_pl.data.video import decode_clip

WIDTH, HEIGHT = 64, 48  # decode_clip(image_size=48): no resize, the centre crop keeps columns 8..55
BARS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (200, 120, 40),
        (40, 120, 200)]
BT709 = 1  # AVCOL_SPC_BT709 = AVCOL_PRI_BT709 = AVCOL_TRC_BT709
MPEG = 1  # AVCOL_RANGE_MPEG (limited range)


def colour_bars() -> np.ndarray:
    """uint8 [48, 64, 3]: eight saturated 8-pixel bars (chroma is flat inside every 2 x 2 block)."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for i, colour in enumerate(BARS):
        pixels[:, 8 * i:8 * (i + 1)] = colour
    return pixels


def write_bars(path: Path, tagged_bt709: bool) -> Path:
    """Two lossless H.264 frames of colour bars; ``tagged_bt709``: RGB->YUV with BT.709 and the stream
    tagged BT.709 (matrix, primaries, transfer, limited range), as HD camera / YouTube files are."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        codec = stream.codec_context
        if tagged_bt709:
            codec.colorspace, codec.color_primaries, codec.color_trc, codec.color_range = BT709, BT709, BT709, MPEG
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(colour_bars(), format="rgb24")
            if tagged_bt709:
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def yuv420p_planes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y [H, W], U and V [H/2, W/2] (float) of the first frame, as decoded (no colour conversion)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "yuv420p"
        packed = frame.to_ndarray()  # yuv420p: the three planes stacked, [H * 3 / 2, W]
    y = packed[:HEIGHT].astype(float)
    u = packed[HEIGHT:HEIGHT + HEIGHT // 4].reshape(HEIGHT // 2, WIDTH // 2).astype(float)
    v = packed[HEIGHT + HEIGHT // 4:].reshape(HEIGHT // 2, WIDTH // 2).astype(float)
    return y, u, v


def limited_range_to_rgb(path: Path, kr: float, kb: float) -> np.ndarray:
    """uint8 [H, W, 3]: the textbook limited-range Y'CbCr -> R'G'B' with luma weights ``kr``, ``kb``
    (BT.601: 0.299, 0.114; BT.709: 0.2126, 0.0722), chroma repeated over its 2 x 2 block."""
    y, u, v = yuv420p_planes(path)
    u, v = (plane.repeat(2, axis=0).repeat(2, axis=1) for plane in (u, v))
    luma, cb, cr = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    kg = 1 - kr - kb
    red = luma + 2 * (1 - kr) * cr
    green = luma - 2 * kb * (1 - kb) / kg * cb - 2 * kr * (1 - kr) / kg * cr
    blue = luma + 2 * (1 - kb) * cb
    return np.clip(np.round(np.stack([red, green, blue], axis=-1)), 0, 255).astype(np.uint8)


def first_frame(path: Path, **kwargs) -> np.ndarray:
    frames, frame_mask = decode_clip(path, max_frames=2, image_size=HEIGHT, **kwargs)
    assert frame_mask[0]
    return frames[0].astype(int)


def crop(pixels: np.ndarray) -> np.ndarray:
    return pixels[:, 8:56].astype(int)


#: swscale's unscaled yuv420p -> rgb24 converter works from lookup tables with fixed-point coefficients
#: (libswscale/yuv2rgb.c), rounding each term separately: up to 2 levels from the exact formula
#: (measured: 2 on these bars, mean 0.8; 3 on 0.5 % of the pixels of random noise).
SWSCALE_ROUNDING = 2


@pytest.fixture(scope="module")
def bt709_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_bars(tmp_path_factory.mktemp("colour") / "bt709.mp4", tagged_bt709=True)
    with av.open(str(path)) as container:  # the tag really is in the file and on the decoded frames
        stream = container.streams.video[0]
        assert stream.codec_context.colorspace == BT709 and stream.codec_context.color_range == MPEG
        assert next(container.decode(stream)).colorspace == BT709
    return path


@pytest.mark.parametrize("resize", ["swscale", "pil"])  # no resize at 48 px: both convert with swscale alike
def test_bt601_is_the_bt601_conversion_of_the_planes(bt709_clip: Path, resize: str) -> None:
    expected = crop(limited_range_to_rgb(bt709_clip, 0.299, 0.114))
    assert np.abs(first_frame(bt709_clip, color_matrix="bt601", resize=resize) - expected).max() <= SWSCALE_ROUNDING


@pytest.mark.parametrize("resize", ["swscale", "pil"])
def test_tagged_follows_the_bt709_tag(bt709_clip: Path, resize: str) -> None:
    bt601 = crop(limited_range_to_rgb(bt709_clip, 0.299, 0.114))
    bt709 = crop(limited_range_to_rgb(bt709_clip, 0.2126, 0.0722))
    tagged = first_frame(bt709_clip, resize=resize)  # the default matrix
    assert np.abs(tagged - bt709).max() <= SWSCALE_ROUNDING
    assert np.abs(tagged - bt601).max() >= 15  # 22 levels on these bars: other colours than the reference's
    assert np.abs(tagged - crop(colour_bars())).max() <= SWSCALE_ROUNDING  # and they are the colours encoded


def test_untagged_clips_are_the_same_either_way(tmp_path: Path) -> None:
    """No tag: swscale's default is BT.601 limited range, so both settings give the same bytes."""
    path = write_bars(tmp_path / "untagged.mp4", tagged_bt709=False)
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).colorspace == 2  # AVCOL_SPC_UNSPECIFIED
    tagged, bt601 = first_frame(path), first_frame(path, color_matrix="bt601")
    np.testing.assert_array_equal(tagged, bt601)
    assert np.abs(bt601 - crop(limited_range_to_rgb(path, 0.299, 0.114))).max() <= SWSCALE_ROUNDING


def test_unknown_matrix_is_a_value_error(bt709_clip: Path) -> None:
    with pytest.raises(ValueError, match="color_matrix"):
        first_frame(bt709_clip, color_matrix="bt2020")
