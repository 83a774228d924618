"""uint8 images to PNG, JPEG or WebP bytes, deterministically.

PNG bytes depend only on the pixels (no timestamps or other metadata are written), which is what
makes "the same request gives byte-identical PNG, alone or batched" testable end to end.
"""

from __future__ import annotations

import base64
import io

import numpy as np

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def encode_image(image: np.ndarray, fmt: str = "png") -> bytes:
    """(H, W, C) uint8 -> encoded bytes (C = 1 or 3)."""
    from PIL import Image

    pixels = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    elif fmt == "jpeg":
        Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
    elif fmt == "webp":
        Image.fromarray(pixels).save(buf, format="WEBP", lossless=True)
    else:
        raise ValueError(f"output_format must be one of {sorted(MEDIA_TYPES)}, not {fmt!r}")
    return buf.getvalue()


def encode_b64(images: np.ndarray, fmt: str = "png") -> list[str]:
    return [base64.b64encode(encode_image(img, fmt)).decode("ascii") for img in images]
