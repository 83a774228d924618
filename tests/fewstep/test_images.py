"""Model output to pixels (fewstep.images.to_uint8): range, rounding and layout."""

from __future__ import annotations

import numpy as np

from fewstep.images import to_uint8


def test_the_range_maps_to_0_255_and_beyond_it_clips():
    x = np.float32([-3.0, -1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 5)
    assert to_uint8(x).ravel().tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds half to even: 128


def exact_halves() -> dict[float, int]:
    """float32 inputs whose pixel value (x + 1) * 127.5, computed in float32, is exactly k + 0.5."""
    out = {}
    for k in range(40, 90):
        x = np.float32(np.float32(k + 0.5) / np.float32(127.5)) - np.float32(1)
        for _ in range(8):
            v = (x + np.float32(1)) * np.float32(127.5)
            if v == np.float32(k + 0.5):
                out[float(x)] = k
                break
            x = np.nextafter(x, np.float32(2) if v < k + 0.5 else np.float32(-2), dtype=np.float32)
    return out


def test_halves_round_to_even_like_torch_round():
    halves = exact_halves()
    assert len({k % 2 for k in halves.values()}) == 2  # both parities occur
    x = np.float32(list(halves)).reshape(1, 1, 1, -1)
    got = to_uint8(x).ravel().tolist()
    assert got == [k if k % 2 == 0 else k + 1 for k in halves.values()]


def test_channels_move_last():
    x = np.zeros((2, 3, 4, 5), np.float32)
    x[1, 2, 3, 4] = 1.0
    out = to_uint8(x)
    assert out.shape == (2, 4, 5, 3) and out[1, 3, 4, 2] == 255 and out[1, 3, 4, 1] == 128 and out[0].max() == 128
