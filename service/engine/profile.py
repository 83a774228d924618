"""Batcher limits from a warm-up cost profile of the backend, instead of constants.

How much a fuller batch buys depends on the machine: on a GPU, 32 images cost little more than
one; on a small CPU a conv UNet costs about the same per image at batch 1 and batch 64. Waiting
for company that buys no throughput only adds latency, so at warm-up the engine times one batch of
each size 1, 2, 4, ... (within a time budget) and derives, per model:

- `max_batch_images`: the smallest batch size whose throughput is within `tolerance` (5%) of the
  best measured. Beyond it a batch only makes its first request wait for the others' compute.
  The tolerance is what keeps the choice still across starts: sizes within it of each other are
  noise apart, and the smallest of them wins whichever measured fastest this time. (On OpenVINO
  bf16 the per-size timings move 20-40% from one start to the next, and the choice with them;
  a 20% tolerance concentrated it on 8, which served fewer images/s under load than 16 or 64:
  BENCHMARKS.md, issue 18.)
- `max_wait_s`: 0 by default (`wait_rule="greedy"`). The engine dispatches only when its runner
  is free, so under load the next batch fills while the running one computes, and the batch size
  grows with the load by itself; waiting while the runner is idle only delays a request that
  arrived into spare capacity. Measured against LitServe on pd-k4 (`fewstep bench peer`,
  BENCHMARKS.md), the bounded wait below cost a lone request 25 ms (p50 64 against 36 ms) and
  bought no throughput at 32 clients. `wait_rule="bounded"` keeps the former rule: 0 when the best
  batch is less than `min_gain` (1.1x) faster per image than batch 1, otherwise the batch-1 time
  times (1 - 1/gain), which keeps a lone request's latency within twice its compute time (it can
  pay on an accelerator whose fixed cost per call dominates, at loads where greedy dispatch would
  run many near-empty batches).

The derivation (`derive_limits`) is pure; `measure_costs` does the timing through any `run(b)`
callable (the engine passes one that runs `Pipeline.generate` on its runner thread), and
`tuned_costs` keeps its result per machine in a tuning cache (`service.tuning`), so that later
starts reuse it instead of drawing a new choice from the noise.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from service.tuning import TuningCache

TOLERANCE = 0.05
MIN_GAIN = 1.1
STOP_GAIN = 0.0  # doubling stops at the first size that gains no more than this over the best smaller one
MIN_SAMPLE_S = 0.05  # within a round, a size runs until this much time was measured
PROFILE_VERSION = 1  # of `measure_costs`: a tuning cache re-measures profiles taken by another version


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


WaitRule = Literal["greedy", "bounded"]


def derive_limits(
    profile: CostProfile, tolerance: float = TOLERANCE, min_gain: float = MIN_GAIN, wait_rule: WaitRule = "greedy"
) -> BatchLimits:
    """The batcher limits a cost profile calls for (see the module docstring)."""
    if not profile.seconds:
        raise ValueError(f"empty cost profile for {profile.model}")
    best = profile.throughput(profile.best_batch)
    knee = min(b for b in profile.seconds if profile.throughput(b) >= (1 - tolerance) * best)
    gain = profile.gain
    if wait_rule == "greedy" or gain < min_gain or 1 not in profile.seconds:
        wait = 0.0
    else:
        wait = profile.seconds[1] * (1 - 1 / gain)
    return BatchLimits(max_batch_images=knee, max_wait_s=round(wait, 4))


def _no_gain(seconds: dict[int, list[float]], b: int, stop_gain: float) -> bool:
    best_smaller = max(size / min(v) for size, v in seconds.items() if size < b)
    return b / min(seconds[b]) <= (1 + stop_gain) * best_smaller


async def measure_costs(
    run: Callable[[int], Awaitable[float]],
    model: str,
    steps: int,
    max_batch: int = 64,
    budget_s: float = 5.0,
    repeats: int = 3,
    stop_gain: float = STOP_GAIN,
    min_sample_s: float = MIN_SAMPLE_S,
    settle_calls: int = 0,
) -> CostProfile:
    """Time `run(b)` (returns seconds) for b = 1, 2, 4, ... up to `max_batch`, within about `budget_s`.

    The choice it feeds (`derive_limits`) must hold still from one start to the next on the same
    machine, and the profile must stay cheap, so:

    - First pass: each size once untimed (its prompts enter the text cache, as a serving
      workload's repeated prompts do) and once timed, keeping the faster of the two. Doubling
      stops at the first size that gains nothing over the best smaller one (`stop_gain`),
      confirmed by one more run so that one slow sample does not end it: past saturation larger
      batches only cost memory and start-up time (a flat CPU curve stops at 2 instead of
      allocating for 64). It also stops when the next size would not fit the budget.
    - Then up to `repeats - 1` interleaved rounds over every size, in an order rotated each round
      (drift hits every size alike), while a whole round fits. Within a round, each size runs as
      many times as reach `min_sample_s`, so a 10 ms batch is not judged on one run.
    - Each size keeps its fastest sample (other work on the machine only ever adds time).
    - `settle_calls` more untimed calls per new size in the first pass: OpenVINO's first three or
      four calls at a new shape run 1.4-3x slower than its steady state, so a size timed on its
      second call looked slower than it is, by how much depending on the start.
    """
    seconds: dict[int, list[float]] = {}
    spent, b = 0.0, 1
    while b <= max_batch:
        for _ in range(settle_calls):
            spent += await run(b)
        first = await run(b)
        t = await run(b)
        spent += first + t
        t = min(first, t)  # the untimed run counts only if it was the faster (noise only adds time)
        seconds[b] = [t]
        if len(seconds) > 1 and _no_gain(seconds, b, stop_gain):
            again = await run(b)  # one slow sample must not end the profile: confirm
            spent += again
            seconds[b] = [min(t, again)]
            if _no_gain(seconds, b, stop_gain):
                break  # saturated: larger sizes would only cost memory and start-up time
        if spent + (2 + settle_calls) * 2 * t > budget_s:  # the next size: 2b images a call at this cost
            break
        b *= 2
    sizes = list(seconds)
    for r in range(repeats - 1):
        per_size = {size: max(1, math.ceil(min_sample_s / min(seconds[size]))) for size in sizes}
        if spent + sum(n * min(seconds[size]) for size, n in per_size.items()) > budget_s:
            break
        k = r % len(sizes)
        for size in sizes[k:] + sizes[:k]:
            for _ in range(per_size[size]):
                t = await run(size)
                spent += t
                seconds[size].append(t)
    return CostProfile(model, steps, {size: min(times) for size, times in seconds.items()})


async def tuned_costs(
    run: Callable[[int], Awaitable[float]],
    model: str,
    steps: int,
    tuning: TuningCache | None,
    identity: dict[str, Any] | None,
    max_batch: int = 64,
    budget_s: float = 5.0,
    tuned_budget_s: float = 20.0,
    settle_calls: int = 0,
) -> tuple[CostProfile, bool]:
    """`measure_costs` through a tuning cache (`service.tuning`): (profile, whether it was reused).

    `identity` names what `run` runs (bundle, backend path and settings: `Pipeline.identity`); with
    it and a cache, the profile measured on this machine by an earlier start is reused, so every
    start serves the same bounds, and a miss measures with `tuned_budget_s` (paid once per machine:
    enough to reach the larger sizes and repeat each) and keeps the result. Without either, this is
    `measure_costs` with `budget_s`."""
    if tuning is None or identity is None:
        profile = await measure_costs(run, model, steps, max_batch, budget_s, settle_calls=settle_calls)
        return profile, False
    fields = {
        **identity,
        "steps": steps,
        "max_batch": max_batch,
        "budget_s": tuned_budget_s,
        "settle_calls": settle_calls,
        "algorithm": PROFILE_VERSION,
    }
    cached = tuning.get("batch_profile", fields)
    if cached is not None:
        return CostProfile(model, steps, {int(b): float(s) for b, s in cached["seconds"].items()}), True
    profile = await measure_costs(run, model, steps, max_batch, tuned_budget_s, settle_calls=settle_calls)
    tuning.put("batch_profile", fields, {"seconds": {str(b): s for b, s in profile.seconds.items()}})
    return profile, False
