"""Model output to pixels, shared by evaluation, `fewstep generate` and the service (numpy only)."""

from __future__ import annotations

import numpy as np


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C), rounding half to even like torch.round."""
    x = np.asarray(x, dtype=np.float32)
    return np.round((np.clip(x, -1.0, 1.0) + 1.0) * np.float32(127.5)).astype(np.uint8).transpose(0, 2, 3, 1)
