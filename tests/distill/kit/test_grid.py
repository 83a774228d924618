"""Captioned image grids (distill.kit.grid): layout, nearest upscaling, captions."""

from __future__ import annotations

import numpy as np
from PIL import Image

from distill.kit.grid import captioned_grid, save_grid


def images(n: int, size: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_images_are_tiled_in_rows_and_upscaled_nearest():
    imgs = images(5)
    grid = np.asarray(captioned_grid(imgs, cols=3, scale=2))
    pad, cell = 4, 8
    assert grid.shape == (2 * (cell + pad) + pad, 3 * (cell + pad) + pad, 3)
    for i in range(5):
        r, c = divmod(i, 3)
        x, y = pad + c * (cell + pad), pad + r * (cell + pad)
        np.testing.assert_array_equal(grid[y : y + cell, x : x + cell], imgs[i].repeat(2, 0).repeat(2, 1))
    x, y = pad + 2 * (cell + pad), pad + (cell + pad)  # the sixth place is left white
    assert (grid[y : y + cell, x : x + cell] == 255).all()


def test_captions_add_text_below_each_image():
    imgs = np.zeros((2, 4, 4, 3), np.uint8) + 255
    plain = np.asarray(captioned_grid(imgs, scale=4))
    captioned = np.asarray(captioned_grid(imgs, ["a red circle", "a blue square"], scale=4))
    assert captioned.shape[0] > plain.shape[0] and captioned.shape[1] == plain.shape[1]
    below = captioned[4 + 16 :, :]
    assert (below < 128).any()  # dark text drawn under the images


def test_save_grid_makes_its_folder(tmp_path):
    path = save_grid(tmp_path / "a" / "b" / "grid.png", images(3), cols=8)
    assert Image.open(path).size == captioned_grid(images(3)).size
