"""Batcher limits from a warm-up cost profile of the backend, instead of constants.

How much a fuller batch buys depends on the machine: on a GPU, 32 images cost little more than
one; on a small CPU a conv UNet costs about the same per image at batch 1 and batch 64. Waiting
for company that buys no throughput only adds latency, so at warm-up the engine times one batch of
each size 1, 2, 4, ... (within a time budget) and derives, per model:

- `max_batch_images`: the smallest batch size whose throughput is within `tolerance` (5%) of the
  best measured. Beyond it a batch only makes its first request wait for the others' compute.
- `max_wait_s`: 0 when the best batch is less than `min_gain` (1.1x) faster per image than batch 1
  (waiting cannot pay for itself); otherwise the batch-1 time times (1 - 1/gain): the compute a
  lone request would save per image, which keeps a lone request's latency within twice its
  compute time.

`max_wait_s` only matters while the runner is idle: under load the queue fills while the running
batch computes, and the next batch leaves as soon as the runner is free.

The derivation (`derive_limits`) is pure; `measure_costs` does the timing through any `run(b)`
callable (the engine passes one that runs `Pipeline.generate` on its runner thread).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

TOLERANCE = 0.05
MIN_GAIN = 1.1


@dataclass(frozen=True)
class CostProfile:
    """Seconds one `Pipeline.generate` call took per batch size (fastest of its repeats)."""

    model: str
    steps: int
    seconds: dict[int, float] = field(default_factory=dict)

    def throughput(self, batch: int) -> float:
        return batch / self.seconds[batch]

    @property
    def best_batch(self) -> int:
        return max(self.seconds, key=self.throughput)

    @property
    def gain(self) -> float:
        """Images/s at the best batch size over images/s at batch 1."""
        return self.throughput(self.best_batch) / self.throughput(1) if 1 in self.seconds else 1.0


@dataclass(frozen=True)
class BatchLimits:
    max_batch_images: int
    max_wait_s: float


def derive_limits(profile: CostProfile, tolerance: float = TOLERANCE, min_gain: float = MIN_GAIN) -> BatchLimits:
    """The batcher limits a cost profile calls for (see the module docstring)."""
    if not profile.seconds:
        raise ValueError(f"empty cost profile for {profile.model}")
    best = profile.throughput(profile.best_batch)
    knee = min(b for b in profile.seconds if profile.throughput(b) >= (1 - tolerance) * best)
    gain = profile.gain
    wait = 0.0 if gain < min_gain or 1 not in profile.seconds else profile.seconds[1] * (1 - 1 / gain)
    return BatchLimits(max_batch_images=knee, max_wait_s=round(wait, 4))


async def measure_costs(
    run: Callable[[int], Awaitable[float]],
    model: str,
    steps: int,
    max_batch: int = 64,
    budget_s: float = 5.0,
    repeats: int = 3,
) -> CostProfile:
    """Time `run(b)` (returns seconds) for b = 1, 2, 4, ... up to `max_batch`, within about `budget_s`.

    A first pass runs each size once untimed (its prompts enter the text cache, as a serving
    workload's repeated prompts do) and once timed, and tries the next size only if its two runs,
    at the cost per image seen so far, fit what is left. Then up to `repeats - 1` rounds time every
    size again in turn while a whole round fits, so that drift on a shared machine hits every size
    alike; each size keeps its fastest time (other work only ever adds time).
    """
    seconds: dict[int, list[float]] = {}
    spent, b = 0.0, 1
    while b <= max_batch:
        spent += await run(b)
        t = await run(b)
        spent += t
        seconds[b] = [t]
        if spent + 4 * t > budget_s:  # the next size, 2b images at this cost per image, runs twice
            break
        b *= 2
    for _ in range(repeats - 1):
        if spent + sum(min(v) for v in seconds.values()) > budget_s:
            break
        for size, times in seconds.items():
            t = await run(size)
            spent += t
            times.append(t)
    return CostProfile(model, steps, {size: min(times) for size, times in seconds.items()})
