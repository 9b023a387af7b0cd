"""Decode untrusted image bytes into RGB uint8 arrays, with limits.

Handles JPEG, PNG, WebP, BMP, GIF (first frame), TIFF; applies EXIF
orientation; drops alpha by compositing on white; scales 16-bit and float
images down to 8 bits; converts grayscale, palette and CMYK to RGB. Every
failure is a typed :mod:`facesocial.errors` error with a stable code.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facesocial.errors import (
    EmptyImage,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    TruncatedImage,
    UnsupportedImageFormat,
)

_EXIF_ORIENTATION = 0x0112
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO"})


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 16

    @classmethod
    def from_settings(cls, settings: object) -> ImageLimits:
        return cls(max_bytes=settings.max_image_bytes,
                   max_pixels=settings.max_image_pixels,
                   min_side=settings.min_image_side)


@dataclass(frozen=True, slots=True)
class DecodedImage:
    rgb: np.ndarray  # (h, w, 3) uint8, C-contiguous
    format: str
    frames: int  # >1 for animated images; only the first is used
    orientation_applied: bool

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        hi = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        g = np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(g[:, :, None], 3, axis=2))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.ascontiguousarray(np.asarray(Image.alpha_composite(bg, rgba).convert("RGB")))
    if mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _looks_truncated(message: str) -> bool:
    m = message.lower()
    return "truncat" in m or "broken data stream" in m or "premature end" in m


def decode_image(data: bytes, limits: ImageLimits | None = None) -> DecodedImage:
    """Decode bytes into an RGB array, or raise a typed error."""
    limits = limits or ImageLimits()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImage(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"the image is {len(data)} bytes; the limit is {limits.max_bytes}",
                            bytes=len(data), limit=limits.max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(data)))
    except UnidentifiedImageError:
        raise UnsupportedImageFormat("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("the image claims too many pixels") from None
    except (OSError, ValueError, SyntaxError) as exc:
        if _looks_truncated(str(exc)):
            raise TruncatedImage(f"the image data is truncated: {exc}") from None
        raise InvalidImage(f"the image header could not be read: {exc}") from None
    with img:
        fmt = img.format or "unknown"
        if fmt not in ALLOWED_FORMATS:
            raise UnsupportedImageFormat(f"image format {fmt} is not supported", format=fmt)
        w, h = img.size
        if w * h > limits.max_pixels:
            raise ImageTooLarge(f"the image is {w}x{h} = {w * h} pixels; the limit is "
                                f"{limits.max_pixels}", width=w, height=h,
                                limit=limits.max_pixels)
        if min(w, h) < limits.min_side:
            raise ImageTooSmall(f"the image is {w}x{h}; each side must be at least "
                                f"{limits.min_side} px", width=w, height=h)
        frames = int(getattr(img, "n_frames", 1) or 1)
        try:
            img.seek(0)
            img.load()
            applied = img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
            oriented = ImageOps.exif_transpose(img)
            rgb = _to_rgb(oriented if oriented is not None else img)
        except (OSError, SyntaxError) as exc:
            msg = str(exc)
            if _looks_truncated(msg):
                raise TruncatedImage(f"the image data is truncated: {msg}") from None
            raise InvalidImage(f"the image could not be decoded: {msg}") from None
        except (ValueError, MemoryError, Image.DecompressionBombError) as exc:
            raise InvalidImage(f"the image could not be decoded: {exc}") from None
    return DecodedImage(rgb=rgb, format=fmt, frames=frames, orientation_applied=applied)


def load_image(path: str | Path, limits: ImageLimits | None = None) -> DecodedImage:
    p = Path(path)
    limits = limits or ImageLimits()
    try:
        size = p.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLarge(f"{p} is {size} bytes; the limit is {limits.max_bytes}")
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidImage(f"no such file: {p}") from None
    except IsADirectoryError:
        raise InvalidImage(f"{p} is a directory") from None
    return decode_image(data, limits)


def resize_long_side(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Downscale so the long side is at most ``max_side``; returns (image, scale)."""
    import cv2

    h, w = rgb.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return rgb, 1.0
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA), s


def check_rgb(rgb: np.ndarray) -> None:
    """Raise :class:`InvalidImage` unless ``rgb`` is an (h, w, 3) uint8 array."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 \
            or rgb.dtype != np.uint8 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise InvalidImage(f"expected an (h, w, 3) uint8 RGB array, got {shape} {dtype}")
