"""Decoding real photos in every mode a user may send, and refusing what is not an image."""
import io

import numpy as np
import pytest
from PIL import Image

from embedsvc.errors import ImageDecodeError
from embedsvc.images import load_image, to_rgb


def _png_bytes(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA", "1", "YCbCr"])
def test_every_common_mode_becomes_rgb_of_the_same_size(photo_images, mode):
    src = photo_images["coffee"].convert(mode)
    out = load_image(_png_bytes(src) if mode not in ("CMYK", "YCbCr") else src)
    assert out.mode == "RGB" and out.size == src.size


def test_transparent_pixels_become_white_not_black(photo_images):
    rgba = photo_images["chelsea"].convert("RGBA")
    alpha = np.array(rgba)
    alpha[:, :, 3] = 0
    alpha[:10, :10, 3] = 255
    out = np.asarray(load_image(_png_bytes(Image.fromarray(alpha, "RGBA"))))
    assert (out[50:, 50:] == 255).all()
    assert (out[:10, :10] == np.asarray(photo_images["chelsea"])[:10, :10]).all()


def test_sixteen_bit_images_are_scaled_not_clipped(photo_images):
    gray8 = np.asarray(photo_images["camera"], dtype=np.uint16)
    img16 = Image.fromarray(gray8 * 257)  # full 16-bit range
    assert img16.mode.startswith("I")
    out = np.asarray(load_image(_png_bytes(img16)))[:, :, 0]
    assert np.abs(out.astype(int) - gray8.astype(int)).max() <= 1


def test_float_images_in_unit_range_are_scaled():
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    out = np.asarray(to_rgb(Image.fromarray(arr, "F")))
    assert out.max() == 255 and out.min() == 0


def test_exif_orientation_is_applied(photo_images):
    img = photo_images["coffee"]  # landscape 600x400
    w, h = img.size
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _png_bytes(img, fmt="JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(data)
    assert out.size == (h, w)
    expected = img.transpose(Image.Transpose.ROTATE_270)
    diff = np.abs(np.asarray(out, int) - np.asarray(expected, int)).mean()
    assert diff < 3  # JPEG noise only


def test_truncated_image_is_an_error_naming_the_item(photo_images):
    data = _png_bytes(photo_images["chelsea"], fmt="JPEG")
    with pytest.raises(ImageDecodeError) as exc:
        load_image(data[: len(data) // 2], name="half.jpg")
    assert exc.value.item == "half.jpg" and "truncated" in str(exc.value)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"this is text, not pixels", "not a recognised image format"),
])
def test_non_images_are_errors(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(data, name="x")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="0 bytes"):
        load_image(tmp_path / "zero.png")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_bytes(Image.new("L", (10_000, 10_000)))  # tiny file, 100 MP
    assert len(bomb) < 200_000
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        load_image(bomb, name="bomb.png")
    assert load_image(bomb, max_pixels=200_000_000).size == (10_000, 10_000)
