"""Image encoding (service.api.encode): PNG bytes that depend on the pixels alone, and every format decodes back."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.api.encode import MEDIA_TYPES, encode_b64, encode_image


def pixels(seed: int = 0, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 12, channels), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_lossless_formats_decode_to_the_same_pixels(fmt):
    image = pixels()
    data = encode_image(image, fmt)
    assert Image.open(io.BytesIO(data)).get_format_mimetype() == MEDIA_TYPES[fmt]
    np.testing.assert_array_equal(decode(data), image)


def test_jpeg_is_a_jpeg_of_the_right_size_and_close_to_the_pixels():
    image = np.full((16, 12, 3), (200, 40, 90), np.uint8)
    data = encode_image(image, "jpeg")
    assert Image.open(io.BytesIO(data)).get_format_mimetype() == MEDIA_TYPES["jpeg"]
    back = decode(data)
    assert back.shape == image.shape and np.abs(back.astype(int) - image).max() <= 8


def test_png_bytes_depend_on_the_pixels_alone():
    assert encode_image(pixels(1)) == encode_image(pixels(1).copy())
    assert encode_image(pixels(1)) != encode_image(pixels(2))


def test_a_one_channel_image_is_greyscale():
    image = pixels(channels=1)
    back = Image.open(io.BytesIO(encode_image(image)))
    assert back.mode == "L"
    np.testing.assert_array_equal(np.asarray(back), image[..., 0])


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match=r"output_format must be one of \['jpeg', 'png', 'webp'\], not 'gif'"):
        encode_image(pixels(), "gif")


def test_base64_is_one_string_per_image_in_order():
    images = np.stack([pixels(3), pixels(4)])
    out = encode_b64(images)
    assert [base64.b64decode(s) for s in out] == [encode_image(images[0]), encode_image(images[1])]
