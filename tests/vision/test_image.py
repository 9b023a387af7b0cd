"""Image decoding: formats, orientation, alpha, bit depth, and every bad input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesocial.errors import (
    EmptyImage,
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    TruncatedImage,
    UnsupportedImageFormat,
)
from facesocial.vision.image import ImageLimits, decode_image, load_image


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_rgb(testdata: Path) -> np.ndarray:
    return load_image(testdata / "faces/obama_240p.jpg").rgb


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"])
def test_formats_decode_to_rgb(face_rgb: np.ndarray, fmt: str) -> None:
    data = _encode(Image.fromarray(face_rgb), fmt)
    img = decode_image(data)
    assert img.rgb.shape == face_rgb.shape and img.rgb.dtype == np.uint8
    assert img.format == fmt


def test_rgba_png_drops_alpha(testdata: Path) -> None:
    img = load_image(testdata / "faces/rgba_32bit.png")
    assert img.rgb.shape[2] == 3


def test_grayscale_and_16bit(face_rgb: np.ndarray) -> None:
    gray = Image.fromarray(face_rgb).convert("L")
    assert decode_image(_encode(gray, "PNG")).rgb.shape[2] == 3
    g16 = (np.asarray(gray, np.uint16) * 257).astype(np.uint16)
    img16 = decode_image(_encode(Image.fromarray(g16), "PNG")).rgb
    assert abs(int(img16[..., 0].astype(int).mean()) - int(np.asarray(gray).mean())) <= 1


def test_exif_orientation_is_applied(face_rgb: np.ndarray) -> None:
    img = Image.fromarray(face_rgb)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(_encode(img, "JPEG", exif=exif))
    assert out.rgb.shape[:2] == (face_rgb.shape[1], face_rgb.shape[0])
    assert out.orientation_applied


def test_animated_gif_uses_first_frame(face_rgb: np.ndarray) -> None:
    frames = [Image.fromarray(face_rgb), Image.fromarray(255 - face_rgb)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(buf.getvalue())
    assert out.frames == 2
    assert abs(float(out.rgb.mean()) - float(face_rgb.mean())) < 10


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(
        b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data, error", [
    (b"", EmptyImage),
    (b"hello, this is a text file, not an image\n" * 10, UnsupportedImageFormat),
    (_png_header_only(30000, 30000), ImageTooLarge),
    (b"\x00\x01\x02", UnsupportedImageFormat),
])
def test_bad_inputs_raise_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        decode_image(data)
    assert info.value.code and 400 <= info.value.status < 500


def test_truncated_jpeg(testdata: Path) -> None:
    data = (testdata / "faces/obama_1.jpg").read_bytes()
    with pytest.raises(TruncatedImage) as info:
        decode_image(data[: len(data) // 3])
    assert info.value.code == "truncated_image"


def test_one_pixel_image(face_rgb: np.ndarray) -> None:
    with pytest.raises(ImageTooSmall):
        decode_image(_encode(Image.new("RGB", (1, 1)), "PNG"))


def test_byte_limit() -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(b"\xff" * 2048, ImageLimits(max_bytes=1024))


def test_not_bytes() -> None:
    with pytest.raises(InvalidImage):
        decode_image("a string")  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage):
        load_image(tmp_path / "nope.jpg")
