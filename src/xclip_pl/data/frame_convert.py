"""Decoded frame -> uint8 ``[S, S, 3]`` RGB: YUV -> RGB, bicubic resize of the short side to ``S``, centre crop.

Three resizes (``resize``), all after the same swscale YUV -> RGB conversion (the same RGB bytes):

* ``torch`` (default): PIL's antialiased bicubic filter (a = -0.5) as torch implements it for ``uint8`` images
  (``F.interpolate(mode="bicubic", antialias=True)``, vectorised), into one output buffer per decode: within 2
  levels of PIL's bytes, ~0.004 levels apart on average (``tests/test_decode_resize.py``), ~6x faster than
  PIL's. (Resizing the kept frames in one batch instead was measured slower in a worker: the batch's
  megabytes, allocated and freed per clip, made glibc hand memory back and page-fault it in again.)
* ``swscale``: swscale's bicubic (a = -0.6) on the planar RGB frame: ~0.25 levels from PIL's on average, up to
  ~10 at sharp edges, where it rings a little more.
* ``pil``: PIL's bicubic on the RGB image, as the reference: the reference's bytes.

Sizes follow torchvision's ``Resize(size)`` + ``CenterCrop(size)`` arithmetic in every case.
"""
from __future__ import annotations

from typing import Literal

import av
import av.video.reformatter
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ColorMatrix = Literal["tagged", "bt601"]
ResizeMethod = Literal["torch", "swscale", "pil"]


def _bicubic_aa_out():
    """The ``out=`` form of the op behind ``F.interpolate(mode="bicubic", antialias=True)`` (private, in torch
    since 1.11), or None if this torch lacks it: the resize then allocates its output for every frame."""
    try:
        return torch.ops.aten._upsample_bicubic2d_aa.out
    except (AttributeError, RuntimeError):
        return None


_BICUBIC_AA_OUT = _bicubic_aa_out()


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
    ``image_size`` (``resize``, see the module docstring), centre crop. One converter per decode: it keeps its
    swscale contexts and its resize output buffer between frames."""

    def __init__(self, image_size: int, color_matrix: ColorMatrix = "tagged", resize: ResizeMethod = "torch") -> None:
        self.image_size, self.color_matrix, self.resize = image_size, color_matrix, resize
        self._to_rgb = av.video.reformatter.VideoReformatter()
        self._resizer = av.video.reformatter.VideoReformatter()
        self._resized: torch.Tensor | None = None  # 1 c h w, channels-last: the torch resize's output, reused

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.resize == "pil":
            return resize_center_crop(frame_to_image(frame, self.color_matrix), self.image_size)
        if self.resize == "swscale":
            return self._swscale_resize_center_crop(frame)
        return self._torch_resize_center_crop(frame)

    def _torch_resize_center_crop(self, frame: av.VideoFrame) -> np.ndarray:
        """RGB at full size (swscale's conversion, as ``to_image``), torch's antialiased bicubic, crop."""
        rgb = self._to_rgb.reformat(frame, format="rgb24", threads=1, **_colour_arguments(frame, self.color_matrix))
        width, height = resized_size(frame.width, frame.height, self.image_size)
        channels = torch.from_numpy(rgb.to_ndarray()).permute(2, 0, 1).unsqueeze(0)  # 1 c h w, channels-last
        if (width, height) != (frame.width, frame.height):
            channels = self._bicubic_antialiased(channels, height, width)
        left, top = center_crop_origin(width, height, self.image_size)
        cropped = channels[0, :, top:top + self.image_size, left:left + self.image_size]
        return cropped.permute(1, 2, 0).numpy().copy()  # s s c; a copy: the buffer is reused

    def _bicubic_antialiased(self, channels: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``F.interpolate(channels, (height, width), mode="bicubic", antialias=True)``, written into the buffer
        this converter keeps (a fresh output per frame costs page faults in a worker)."""
        if _BICUBIC_AA_OUT is None:
            return F.interpolate(channels, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        if self._resized is None or self._resized.shape[2:] != (height, width):
            self._resized = torch.empty((1, height, width, 3), dtype=torch.uint8).permute(0, 3, 1, 2)  # channels-last
        _BICUBIC_AA_OUT(channels, [height, width], False, None, None, out=self._resized)
        return self._resized

    def _swscale_resize_center_crop(self, frame: av.VideoFrame) -> np.ndarray:
        """gbrp at full size (swscale's RGB conversion, as ``to_image``), bicubic resize, crop, -> RGB."""
        planar_rgb = self._to_rgb.reformat(frame, format="gbrp", threads=1,
                                           **_colour_arguments(frame, self.color_matrix))
        width, height = resized_size(frame.width, frame.height, self.image_size)
        resized = self._resizer.reformat(planar_rgb, width=width, height=height, interpolation="BICUBIC", threads=1)
        left, top = center_crop_origin(width, height, self.image_size)
        rows, columns = slice(top, top + self.image_size), slice(left, left + self.image_size)
        green, blue, red = (_plane_pixels(plane, height)[rows, columns] for plane in resized.planes)
        return np.stack([red, green, blue], axis=-1)
