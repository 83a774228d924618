"""Serving to a latency objective: predict each request's completion, and choose the model that
serves it. Pure: no clock (`now` is an argument), no I/O, no asyncio; the engine's glue
(`service.engine.router`) builds the inputs from its queue, scheduler and pipelines.

A deployment sets an objective (`FEWSTEP_SLO__P99_MS`); each request carries a quality hint:

- `best`: the model (and step count) it asked for, never another; it may wait, or get 429 with
  `shed` set when it is predicted over the objective.
- `fast`: the cheapest option of the family (per image, at full batch) the request can run on.
- `auto` (the default when an objective is set): the asked option while it is predicted to finish
  within the objective and nothing is pressing; otherwise a cheaper option, where the quality it
  gives up is smallest for the request's prompt class.

**Prediction.** A request's completion time is the work ahead of it plus its own batch:

- request-level scheduling (`predict_request_level`): the batching policy
  (`service.engine.policy.DynamicBatchPolicy`, greedy) is replayed on the queue as it stands, after
  the batch in flight: batch after batch, each the head's key with the same-key requests behind it
  that fit. A new request joins the first batch of its key with room (it then finishes with that
  batch, made larger by its images), or runs after all of them.
- step-level scheduling (`predict_step_level`): a fluid estimate. Its model runs the image-steps
  ahead of it and its own, at most a max batch per iteration (and at least its own step count of
  iterations); the other models' iterations interleave one for one while they have work.

Batch costs come from the warm-up cost profile of each model (`CostModel`: seconds per batch
size, scaled by steps over the profiled step count, interpolated between the profiled sizes),
corrected online by the ratio of observed to predicted compute (an EMA per model), so that a
machine that got slower (other work on its cores) is predicted slower.

**Choice** (`decide`, for `auto`). The target is `headroom` x the objective. The asked option's
prediction over the target, u, sets a pressure p in [0, 1]: 0 below `pressure_start`, rising
linearly to 1 at u = 1 while the queue is still growing (the recent demand, arrivals times the
asked option's cost, at or past the machine's capacity), and 1 past the target. The pressure falls
back slowly (half-life `recovery_half_life_s`) and rises at once: down fast, up slowly, so that a
noisy estimate does not flap between models. Each option o scores q_c(o) - lambda x cost(o) /
cost(asked), with q_c its evaluated quality for the request's prompt class c (adherence per class,
from the bundles' evaluation rows) and lambda = p x the largest quality lost per share of cost saved
anywhere in the family. So at a low pressure only the
downgrades that lose least per second saved happen (one-object prompts lose little from 8 to 4
steps, two-object prompts lose more): the cheapest quality is given up first, and at p = 1 every
downgrade that buys time is taken. The choice is the best-scoring option predicted within the
target; if none is, the option predicted to finish first (reason `unmet`; with `shed`, a
refusal when even that is predicted over the objective).

Every decision says why (`REASONS`): `as_asked`, `pressure` (a cheaper option although the asked
one fitted: cheap quality given up under pressure), `slo` (the asked option was predicted over the
target), `unmet` (nothing was predicted within the target: the fastest), `fast` (the hint).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Generic, Literal, TypeVar

Hint = Literal["auto", "best", "fast"]
HINTS: tuple[Hint, ...] = ("auto", "best", "fast")
Reason = Literal["as_asked", "pressure", "slo", "unmet", "fast"]
REASONS: tuple[Reason, ...] = ("as_asked", "pressure", "slo", "unmet", "fast")
Scheduling = Literal["request", "step"]

OVERALL = "overall"  # the evaluation rows' class for a prompt of no known class
SCORE_DECIMALS = 9  # scores this close are ties (then the higher quality, then the asked option, wins)
SCALE_BOUNDS = (0.25, 4.0)  # the online cost correction stays within these
SCALE_WEIGHT = 0.1  # EMA weight of the newest observed/predicted ratio


@dataclass(frozen=True)
class SloConfig:
    """The objective and how the controller works towards it (`service.settings.SloSettings`)."""

    objective_s: float | None = None  # None: no objective (auto serves as asked)
    headroom: float = 0.8  # the share of the objective a prediction may use
    pressure_start: float = 0.5  # at this share of the target the pressure starts to rise
    recovery_half_life_s: float | None = None  # None: the objective
    shed: bool = False  # refuse (429) what even the fastest option is predicted to finish late
    default_hint: Hint | None = None  # None: auto with an objective, best without

    def __post_init__(self) -> None:
        if self.objective_s is not None and not self.objective_s > 0:
            raise ValueError(f"objective_s must be > 0, got {self.objective_s}")
        if not 0 < self.headroom <= 1:
            raise ValueError(f"headroom must be in (0, 1], got {self.headroom}")
        if not 0 <= self.pressure_start <= 1:
            raise ValueError(f"pressure_start must be in [0, 1], got {self.pressure_start}")
        if self.recovery_half_life_s is not None and not self.recovery_half_life_s > 0:
            raise ValueError(f"recovery_half_life_s must be > 0, got {self.recovery_half_life_s}")

    @property
    def target_s(self) -> float | None:
        """What a prediction must stay within: headroom x the objective."""
        return None if self.objective_s is None else self.objective_s * self.headroom

    @property
    def hint(self) -> Hint:
        """The hint of a request that gives none."""
        return self.default_hint or ("auto" if self.objective_s is not None else "best")

    @property
    def half_life_s(self) -> float:
        if self.recovery_half_life_s is not None:
            return self.recovery_half_life_s
        return self.objective_s if self.objective_s is not None else 1.0


# --- what is ahead of a request ------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A model at a step count: what a request can be served by."""

    model: str
    steps: int

    def __str__(self) -> str:
        return f"{self.model}@{self.steps}"


@dataclass(frozen=True)
class Work:
    """Images of one model still to run `steps` steps each (queued: all their steps)."""

    model: str
    steps: int
    images: int


@dataclass(frozen=True)
class Backlog:
    """The work ahead of a new request, as its scheduler sees it.

    Request level: `running` is the batch computing (one `Work` per request, one key), computing
    for `running_elapsed_s`; `queued` the queue in arrival order. Step level: `running` the images
    admitted to a model (in its batch or standing by) by the steps each still needs; `queued` the
    images not yet admitted, in arrival order.
    """

    scheduling: Scheduling = "request"
    queued: tuple[Work, ...] = ()
    running: tuple[Work, ...] = ()
    running_elapsed_s: float = 0.0
    arrivals: Mapping[Option, float] = field(default_factory=dict)  # images/s admitted per option, lately

    @property
    def images(self) -> int:
        return sum(w.images for w in self.queued) + sum(w.images for w in self.running)


# --- what work costs -----------------------------------------------------------------------------


@dataclass
class CostModel:
    """Seconds a batch takes, per model: the warm-up profile, corrected online.

    `profiles[model] = (steps profiled, {batch size: seconds})`; a batch of another step count
    costs in proportion (cost grows with steps; the per-image ratios do not). `max_batch` bounds
    the batches the schedulers form. Mutable (`observe`, `use_profile`), but deterministic and
    free of clocks and I/O.
    """

    profiles: dict[str, tuple[int, dict[int, float]]] = field(default_factory=dict)
    max_batch: dict[str, int] = field(default_factory=dict)
    default_max_batch: int = 8
    scale: dict[str, float] = field(default_factory=dict)

    def use_profile(self, model: str, steps: int, seconds: Mapping[int, float], max_batch: int) -> None:
        if not seconds or any(b < 1 or s <= 0 for b, s in seconds.items()):
            raise ValueError(f"a cost profile needs positive sizes and seconds, got {dict(seconds)}")
        self.profiles[model] = (steps, dict(sorted(seconds.items())))
        self.max_batch[model] = max_batch

    def batch_limit(self, model: str) -> int:
        return self.max_batch.get(model, self.default_max_batch)

    def base_seconds(self, model: str, steps: int, images: float) -> float | None:
        """The profile's seconds for `images` at `steps` (no online correction); None if unprofiled."""
        entry = self.profiles.get(model)
        if entry is None or images <= 0:
            return None if entry is None else 0.0
        profiled_steps, table = entry
        return interpolate(table, images) * steps / profiled_steps

    def seconds(self, model: str, steps: int, images: float) -> float | None:
        """Predicted seconds of one batch (request level: all `steps`; step level: steps=1 is one
        iteration); None if the model has no profile."""
        base = self.base_seconds(model, steps, images)
        return None if base is None else base * self.scale.get(model, 1.0)

    def unit_seconds(self, model: str, steps: int) -> float | None:
        """Seconds per image at the model's max batch: the cost that downgrades save."""
        b = self.batch_limit(model)
        s = self.seconds(model, steps, b)
        return None if s is None else s / b

    def observe(self, model: str, steps: int, images: float, seconds: float) -> None:
        """A batch (or iteration, steps=1) took `seconds`: move the model's correction towards it."""
        base = self.base_seconds(model, steps, images)
        if not base or seconds <= 0:
            return
        ratio = min(max(seconds / base, SCALE_BOUNDS[0]), SCALE_BOUNDS[1])
        old = self.scale.get(model)
        self.scale[model] = ratio if old is None else (1 - SCALE_WEIGHT) * old + SCALE_WEIGHT * ratio


def interpolate(table: Mapping[int, float], images: float) -> float:
    """Seconds for `images` from a profile's {size: seconds}: linear between the profiled sizes,
    proportional below the smallest and above the largest (no gain past what was measured)."""
    sizes = sorted(table)
    if images <= sizes[0]:
        return table[sizes[0]] * images / sizes[0]
    if images >= sizes[-1]:
        return table[sizes[-1]] * images / sizes[-1]
    for lo, hi in pairwise(sizes):
        if lo <= images <= hi:
            f = (images - lo) / (hi - lo)
            return table[lo] + f * (table[hi] - table[lo])
    raise AssertionError("unreachable")  # pragma: no cover


K = TypeVar("K", bound=Hashable)


@dataclass
class ArrivalRates(Generic[K]):
    """Images per key lately (an option; an asked option and prompt class): exponentially decayed
    counts over `window_s`."""

    window_s: float = 1.0
    counts: dict[K, tuple[float, float]] = field(default_factory=dict)  # key -> (decayed count, as of)

    def add(self, key: K, images: int, now: float) -> None:
        self.counts[key] = (self._count(key, now) + images, now)

    def rates(self, now: float) -> dict[K, float]:
        """Images per second per key, as of `now`."""
        return {k: self._count(k, now) / self.window_s for k in self.counts}

    def _count(self, key: K, now: float) -> float:
        count, at = self.counts.get(key, (0.0, now))
        return count * math.exp(-max(0.0, now - at) / self.window_s)


# --- prediction ----------------------------------------------------------------------------------


def predict(backlog: Backlog, option: Option, images: int, costs: CostModel) -> float | None:
    """Seconds from now until a request of `images` images on `option` would finish, admitted now
    behind `backlog`; None if a model involved has no cost profile."""
    return predictions(backlog, [option], images, costs)[option]


def predictions(
    backlog: Backlog, options: Sequence[Option], images: int, costs: CostModel
) -> dict[Option, float | None]:
    """`predict` for several options at once (the queue is replayed once)."""
    if backlog.scheduling == "step":
        return {o: predict_step_level(backlog, o, images, costs) for o in options}
    batches = replay_batches(backlog.queued, costs.batch_limit)
    return {o: predict_request_level(backlog, o, images, costs, batches) for o in options}


def replay_batches(queue: Sequence[Work], limit: Callable[[str], int]) -> list[tuple[Option, int]]:
    """The batches (key, images) the greedy dynamic batching policy forms from `queue`, in order;
    `limit(model)` is the model's max batch."""
    by_key: dict[Option, list[int]] = {}
    for i, w in enumerate(queue):
        by_key.setdefault(Option(w.model, w.steps), []).append(i)
    start = dict.fromkeys(by_key, 0)  # per key: its first index that may still be untaken
    taken = [False] * len(queue)
    batches: list[tuple[Option, int]] = []
    for head, w in enumerate(queue):
        if taken[head]:
            continue
        key = Option(w.model, w.steps)
        bound = limit(w.model)
        taken[head], total = True, w.images
        line = by_key[key]
        while start[key] < len(line) and taken[line[start[key]]]:
            start[key] += 1
        for j in line[start[key] :]:
            if total >= bound:
                break
            if not taken[j] and total + queue[j].images <= bound:
                taken[j], total = True, total + queue[j].images
        batches.append((key, total))
    return batches


def predict_request_level(
    backlog: Backlog,
    option: Option,
    images: int,
    costs: CostModel,
    batches: Sequence[tuple[Option, int]] | None = None,
) -> float | None:
    """Request-level completion: the running batch's remainder, then the policy's batches replayed
    (`batches`: `replay_batches` of the queue, when the caller has it already).

    A batch leaves only when the runner is free, so the requests that arrive until then join it:
    each batch not yet running is costed at its size plus the images of its key expected to arrive
    (`Backlog.arrivals`) between the previous batch of that key leaving and its own departure, up
    to the max batch. Where batching buys little (a CPU), a request behind a busy runner is then
    predicted in the full batch it will run in, not alone."""
    last: dict[Option, float] = {}  # when the last batch of each key leaves: arrivals after it join the next

    def filled(key: Option, size: float, at: float) -> float:
        rate = backlog.arrivals.get(key, 0.0)
        since, last[key] = last.get(key, 0.0), at
        return max(size, min(costs.batch_limit(key.model), size + rate * (at - since)))

    t = 0.0
    if backlog.running:
        w = backlog.running[0]
        cost = costs.seconds(w.model, w.steps, sum(r.images for r in backlog.running))
        if cost is None:
            return None
        t = max(0.0, cost - backlog.running_elapsed_s)
    bound = costs.batch_limit(option.model)
    if batches is None:
        batches = replay_batches(backlog.queued, costs.batch_limit)
    for key, total in batches:
        if key == option and total + images <= bound:
            joined = costs.seconds(key.model, key.steps, filled(key, total + images, t))
            return None if joined is None else t + joined
        cost = costs.seconds(key.model, key.steps, filled(key, total, t))
        if cost is None:
            return None
        t += cost
    own = costs.seconds(option.model, option.steps, filled(option, images, t))
    return None if own is None else t + own


def predict_step_level(backlog: Backlog, option: Option, images: int, costs: CostModel) -> float | None:
    """Step-level completion, a fluid estimate (see the module docstring)."""
    work: dict[str, int] = {}  # image-steps ahead per model (the new request's included)
    count: dict[str, int] = {}  # images ahead per model
    longest: dict[str, int] = {}  # most steps any image of the model still needs
    for w in (*backlog.running, *backlog.queued, Work(option.model, option.steps, images)):
        work[w.model] = work.get(w.model, 0) + w.images * w.steps
        count[w.model] = count.get(w.model, 0) + w.images
        longest[w.model] = max(longest.get(w.model, 0), w.steps)

    def iterations(model: str) -> tuple[int, int]:
        batch = min(costs.batch_limit(model), count[model])
        return max(math.ceil(work[model] / batch), 1), batch

    mine, batch = iterations(option.model)
    mine = max(mine, option.steps)
    step = costs.seconds(option.model, 1, batch)
    if step is None:
        return None
    t = mine * step
    for model in work:
        if model == option.model:
            continue
        theirs, b = iterations(model)
        cost = costs.seconds(model, 1, b)
        if cost is None:
            return None
        t += min(theirs, mine) * cost
    return t


# --- the choice ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """An option a request can run on: its quality per prompt class (empty: not evaluated), its
    cost per image at full batch, and its predicted completion (None: cannot be predicted)."""

    option: Option
    quality: Mapping[str, float]
    unit_s: float
    predicted_s: float | None

    def quality_for(self, prompt_class: str) -> float | None:
        q = self.quality.get(prompt_class)
        return self.quality.get(OVERALL) if q is None else q


@dataclass(frozen=True)
class Situation:
    """One request as the controller sees it: its hint and prompt class, the option it asked for,
    and the cheaper options (per image) it could run on, each with its prediction."""

    hint: Hint
    prompt_class: str
    asked: Candidate
    cheaper: tuple[Candidate, ...] = ()
    now: float = 0.0
    # compute the recent arrivals ask for, as asked, per second of machine time (None: not known)
    demand: float | None = None


@dataclass(frozen=True)
class ControllerState:
    """The pressure (0..1) as of `at` (it decays from there: up slowly)."""

    pressure: float = 0.0
    at: float = 0.0

    def decayed(self, now: float, half_life_s: float) -> float:
        if self.pressure <= 0:
            return 0.0
        return self.pressure * 0.5 ** (max(0.0, now - self.at) / half_life_s)


@dataclass(frozen=True)
class Decision:
    """The option chosen and why; `over`: predicted past the objective; `reject`: refuse (shed)."""

    option: Option
    reason: Reason
    predicted_s: float | None
    pressure: float = 0.0
    over: bool = False
    reject: bool = False

    @property
    def downgraded(self) -> bool:
        return self.reason != "as_asked"


def pressure_of(predicted_s: float, config: SloConfig, demand: float | None = None) -> float:
    """The pressure a prediction of the asked option calls for: 1 past the target; 0 below
    `pressure_start` x target; between them rising linearly, while the queue is still growing (the
    recent `demand` at or past the machine's capacity; unknown counts as growing). A queue that
    drains by itself (a short spike at a low load) gives up no quality before it must."""
    target = config.target_s
    assert target is not None
    u = predicted_s / target
    start = config.pressure_start
    if u >= 1:
        return 1.0
    if start >= 1 or u <= start or (demand is not None and demand < 1):
        return 0.0
    return (u - start) / (1 - start)


def loss_scale(asked: Candidate, cheaper: Sequence[Candidate]) -> float:
    """The most quality any cheaper option loses per share of the asked option's cost it saves,
    over every prompt class the rows name: the price at which every downgrade is worth taking."""
    classes = {c for cand in (asked, *cheaper) for c in cand.quality} or {OVERALL}
    best = 0.0
    for o in cheaper:
        saved = 1 - o.unit_s / asked.unit_s
        if saved <= 0:
            continue
        for c in classes:
            qa, qo = _asked_quality(asked, cheaper, c), o.quality_for(c)
            if qa is not None and qo is not None:
                best = max(best, (qa - qo) / saved)
    return max(best, 1e-6)


def _asked_quality(asked: Candidate, cheaper: Sequence[Candidate], prompt_class: str) -> float | None:
    """The asked option's quality for the class; not evaluated: as good as the best evaluated one
    (the client asked for it, so the controller never assumes it worse than what it would give)."""
    q = asked.quality_for(prompt_class)
    if q is not None:
        return q
    known = [v for o in cheaper if (v := o.quality_for(prompt_class)) is not None]
    return max(known) if known else None


def ranking(asked: Candidate, cheaper: Sequence[Candidate], prompt_class: str, price: float):
    """The key `max` picks an option by: its quality for the class minus `price` x its cost relative
    to the asked option's (scores this close are ties: then the higher quality, then the asked one)."""

    def rank(c: Candidate) -> tuple[float, float, bool]:
        q = _asked_quality(asked, cheaper, prompt_class) if c is asked else c.quality_for(prompt_class)
        q = -math.inf if q is None else q
        return round(q - price * c.unit_s / asked.unit_s, SCORE_DECIMALS), q, c is asked

    return rank


def decide(situation: Situation, config: SloConfig, state: ControllerState) -> tuple[Decision, ControllerState]:
    """The option to serve `situation`'s request on, and the controller's next state."""
    asked, cheaper, now = situation.asked, situation.cheaper, situation.now
    objective = config.objective_s

    def decision(choice: Candidate, reason: Reason, pressure: float = state.pressure, shed: bool = False) -> Decision:
        if choice is asked:
            reason = "as_asked"
        over = objective is not None and choice.predicted_s is not None and choice.predicted_s > objective
        return Decision(choice.option, reason, choice.predicted_s, pressure, over, shed and over)

    if situation.hint == "best":
        return decision(asked, "as_asked", shed=config.shed), state
    if situation.hint == "fast":
        fastest = min((asked, *cheaper), key=lambda c: (c.unit_s, c is not asked))
        return decision(fastest, "fast", shed=config.shed), state
    if config.target_s is None or asked.predicted_s is None:
        return decision(asked, "as_asked"), state

    target = config.target_s
    pressure = max(state.decayed(now, config.half_life_s), pressure_of(asked.predicted_s, config, situation.demand))
    new_state = ControllerState(pressure, now)
    if pressure <= 0 and asked.predicted_s <= target:
        return decision(asked, "as_asked", pressure), new_state
    options = [asked, *cheaper]
    rank = ranking(asked, cheaper, situation.prompt_class, pressure * loss_scale(asked, cheaper))

    feasible = [c for c in options if c.predicted_s is not None and c.predicted_s <= target]
    if feasible:
        choice = max(feasible, key=rank)
        asked_fits = asked.predicted_s <= target
        return decision(choice, "pressure" if asked_fits else "slo", pressure), new_state
    predicted = [c for c in options if c.predicted_s is not None]
    fastest = min(predicted, key=lambda c: (c.predicted_s, tuple(-v for v in rank(c))))
    return decision(fastest, "unmet", pressure, shed=config.shed), new_state


def with_predictions(situation: Situation, predictions: Mapping[Option, float | None]) -> Situation:
    """`situation` with each candidate's prediction replaced from `predictions` (tests, benchmarks)."""

    def one(c: Candidate) -> Candidate:
        return replace(c, predicted_s=predictions.get(c.option, c.predicted_s))

    return replace(situation, asked=one(situation.asked), cheaper=tuple(one(c) for c in situation.cheaper))
