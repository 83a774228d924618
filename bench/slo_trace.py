"""The bursty open-loop trace of `fewstep bench slo`: a Markov-modulated Poisson process over a mix
of one- and two-object shapes-world prompts.

Arrivals follow a two-state MMPP: a calm state and a burst state, each with its own Poisson rate,
the state held for an exponential time (mean `burst_s` in the burst, and whatever mean makes the
burst take `burst_share` of the time in the calm). The burst rate is `burst_ratio` times the calm
rate; both are set so that the long-run mean is `rate`. So at a mean load well under capacity
the bursts still run over it for seconds at a time: what a latency objective has to survive, and
what a plain Poisson load at the same mean never shows.

Each arrival draws its prompt class (one object with probability `one_object_share`) and then a
prompt of that class from a pool of distinct captions, and a seed. A prompt keeps its index in the
shapes-world stream it was sampled from (`Prompt.id`), so the scoring pass (`bench.slo_score`) can
read what the prompt asks for from the scene record (`prompt_spec`), as the evaluation does, rather
than parse the caption back. Pure and seeded: the same
configuration gives the same trace, which every server of a run replays. The loads of a run share
their randomness (common random numbers): the same calm and burst periods, and arrivals that are one
unit-rate Poisson stream mapped through the load's cumulative rate, so a higher load has the same
bursts, denser, and the k-th arrival has the same prompt and seed at every load.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import shapesworld as shapes
from service.engine.quality import prompt_class


@dataclass(frozen=True)
class Prompt:
    id: int  # the index of its scene in the shapes-world stream of the pools' seed
    caption: str


@dataclass(frozen=True)
class Arrival:
    t: float  # seconds from the start of the trace
    prompt: str
    prompt_class: str
    seed: int
    burst: bool  # arrived in the burst state
    prompt_id: int = -1  # `Prompt.id` (-1: a prompt from elsewhere)


@dataclass(frozen=True)
class Mmpp:
    """A two-state MMPP with mean rate `rate` (per second)."""

    rate: float
    burst_ratio: float = 4.0
    burst_share: float = 0.25
    burst_s: float = 2.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst_ratio < 1 or not 0 < self.burst_share < 1 or self.burst_s <= 0:
            raise ValueError(f"an MMPP needs rate > 0, burst_ratio >= 1, 0 < burst_share < 1, burst_s > 0: {self}")

    @property
    def calm_rate(self) -> float:
        return self.rate / (1 - self.burst_share + self.burst_ratio * self.burst_share)

    @property
    def burst_rate(self) -> float:
        return self.calm_rate * self.burst_ratio

    @property
    def calm_s(self) -> float:
        """Mean time in the calm state (so that bursts take `burst_share` of the time)."""
        return self.burst_s * (1 - self.burst_share) / self.burst_share

    def periods(self, seconds: float, rng: random.Random) -> list[tuple[float, float, bool]]:
        """(start, end, in a burst) over `seconds`, starting in the stationary state."""
        out = []
        t, burst = 0.0, rng.random() < self.burst_share
        while t < seconds:
            end = min(seconds, t + rng.expovariate(1 / (self.burst_s if burst else self.calm_s)))
            out.append((t, end, burst))
            t, burst = end, not burst
        return out

    def times(self, seconds: float, states: random.Random, points: random.Random) -> list[tuple[float, bool]]:
        """(arrival time, in a burst) over `seconds`: the periods drawn from `states`, the arrivals
        a unit-rate Poisson stream from `points` mapped through the cumulative rate."""
        out: list[tuple[float, bool]] = []
        done, u = 0.0, points.expovariate(1.0)  # unit time used by the periods so far; the next point
        for start, end, burst in self.periods(seconds, states):
            rate = self.burst_rate if burst else self.calm_rate
            while u < done + rate * (end - start):
                out.append((start + (u - done) / rate, burst))
                u += points.expovariate(1.0)
            done += rate * (end - start)
        return out


def prompt_pools(count: int = 256, seed: int = 0) -> dict[str, list[Prompt]]:
    """Distinct shapes-world captions by prompt class (`one_object`, `two_objects`), `count` each,
    each with its index in the stream `seed` (training captions, `shapes.sample`)."""
    pools: dict[str, list[Prompt]] = {"one_object": [], "two_objects": []}
    seen: set[str] = set()
    i = 0
    while min(len(p) for p in pools.values()) < count and i < 200 * count:
        caption = shapes.sample(seed, i).caption
        i += 1
        cls = prompt_class(caption)
        if caption in seen or cls not in pools or len(pools[cls]) >= count:
            continue
        seen.add(caption)
        pools[cls].append(Prompt(i - 1, caption))
    return pools


def prompt_spec(seed: int, prompt_id: int, caption: str) -> shapes.PromptSpec:
    """What prompt `prompt_id` of the pools of `seed` asks for, from its scene record
    (`shapes.spec_of`). `caption` is the one the trace served: a shapes world that no longer
    samples it (its vocabulary or captioner changed since the run) is an error, not a silent
    mismatch between the prompt served and the prompt scored."""
    item = shapes.sample(seed, prompt_id)
    if item.caption != caption:
        raise ValueError(
            f"prompt {prompt_id} of seed {seed} is now {item.caption!r}, but the run served {caption!r}: "
            "the shapes world changed since the run; run the benchmark again"
        )
    return shapes.spec_of(item.scene, item.mentions, item.background_mentioned)


def make_trace(
    process: Mmpp, seconds: float, one_object_share: float, pools: dict[str, list[Prompt]], seed: int
) -> list[Arrival]:
    """The arrivals of one load level: MMPP times, each with a prompt of a drawn class and a seed
    (three streams from `seed`: the periods, the arrivals, their prompts; see the module docstring)."""
    states, points, prompts = (random.Random(f"{seed}:{what}") for what in ("periods", "arrivals", "prompts"))
    out = []
    for t, burst in process.times(seconds, states, points):
        cls = "one_object" if prompts.random() < one_object_share else "two_objects"
        prompt = prompts.choice(pools[cls])
        out.append(Arrival(t, prompt.caption, cls, prompts.randrange(2**30), burst, prompt.id))
    return out
