"""Captioned image grids (PNG) for data previews and training samples."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def captioned_grid(
    images: np.ndarray, captions: list[str] | None = None, cols: int = 8, scale: int = 4, caption_lines: int = 5
) -> Image.Image:
    """Tile uint8 (N, H, W, 3) images, each upscaled `scale`x (nearest) with its caption below."""
    n, h, w, _ = images.shape
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    cw, ch = w * scale, h * scale
    font = ImageFont.load_default()
    chars = max(8, cw // 6)
    text_h = 11 * caption_lines + 4 if captions else 0
    pad = 4
    grid = Image.new("RGB", (cols * (cw + pad) + pad, rows * (ch + text_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for i in range(n):
        r, c = divmod(i, cols)
        x, y = pad + c * (cw + pad), pad + r * (ch + text_h + pad)
        grid.paste(Image.fromarray(images[i]).resize((cw, ch), Image.Resampling.NEAREST), (x, y))
        if captions:
            lines = textwrap.wrap(captions[i], chars)[:caption_lines]
            for j, line in enumerate(lines):
                draw.text((x, y + ch + 2 + 11 * j), line, fill=(0, 0, 0), font=font)
    return grid


def save_grid(path: str | Path, images: np.ndarray, captions: list[str] | None = None, cols: int = 8) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    captioned_grid(images, captions, cols).save(path)
    return path
