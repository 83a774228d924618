"""Per-image seeded noise: image i's noise depends only on its own seed, never on the batch.

Every random draw of a sampler (the initial z_1 and each ancestral step's posterior noise) comes
from a stream keyed by (seed, stream index): stream 0 is the initial noise, stream j + 1 the noise
of step j. So the same seed gives the same image alone, inside any batch, at any batch position,
and under step-level batching where images of one batch sit at different steps.

Numpy's SeedSequence + PCG64 is the generator on every side (training rollouts may use torch's
generator instead; serving and evaluation use this one), so the numpy and torch sampler paths draw
identical noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    if not isinstance(seed, int | np.integer) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def image_noise(seed: int, stream: int, shape: Sequence[int]) -> np.ndarray:
    """Standard normal float32 noise of `shape` for one image's `stream`."""
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([check_seed(seed), stream])))
    return gen.standard_normal(tuple(shape), dtype=np.float32)


def batch_noise(seeds: Sequence[int], stream: int, shape: Sequence[int]) -> np.ndarray:
    """Stack of `image_noise` for each seed: (len(seeds), *shape)."""
    return np.stack([image_noise(s, stream, shape) for s in seeds])


class SeededNoise:
    """Noise source for the samplers: `initial()` is stream 0, `step(j)` is stream j + 1."""

    def __init__(self, seeds: Sequence[int], shape: Sequence[int]) -> None:
        self.seeds = [check_seed(s) for s in seeds]
        self.shape = tuple(shape)

    def initial(self) -> np.ndarray:
        return batch_noise(self.seeds, 0, self.shape)

    def step(self, j: int) -> np.ndarray:
        return batch_noise(self.seeds, j + 1, self.shape)
