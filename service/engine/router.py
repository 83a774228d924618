"""The latency controller's glue: from a request, the loaded pipelines and the scheduler's backlog
to the pure decision of `service.engine.slo`, and back to a request the scheduler runs.

The family is every loaded (model, step count) with an evaluation row (`service.engine.quality`).
A request asked for one option (its model, at its steps or the model's default); the options it may
be served by instead are the evaluated ones that are cheaper per image (the profiled cost at full
batch; without a profile for every one of them, network evaluations per image), produce its
resolution and accept its settings (guidance within range, a negative prompt only on a model that
takes one: `Pipeline.check`). A downgraded request keeps its prompt, seeds, `n` and explicit
guidance; guidance left to the model is the serving model's default. The asked option is the
ceiling: nothing is ever upgraded (an idle server serves what was asked).

The router keeps the controller's state, the cost model, which the engine feeds (the warm-up
profiles and batch bounds, `use_profile`; every batch or iteration computed, `observe`), and the
recent arrival rates: per served option (what will join the batches ahead of a request) and per
asked option (the demand: whether a long queue is still growing).
Not thread-safe: the event loop alone calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from service.engine.profile import CostProfile
from service.engine.quality import prompt_class, quality_rows
from service.engine.slo import (
    HINTS,
    ArrivalRates,
    Backlog,
    Candidate,
    ControllerState,
    CostModel,
    Decision,
    Hint,
    Option,
    Situation,
    SloConfig,
    decide,
    predictions,
)
from service.engine.types import GenerateRequest, ResolvedRequest, Routing
from service.errors import EngineError, InvalidArgument
from service.pipeline import ImageJob, Pipeline


class Router:
    """Chooses the option each admitted request runs on (see the module docstring)."""

    def __init__(self, pipelines: Mapping[str, Pipeline], config: SloConfig, max_batch_images: int = 8) -> None:
        self.pipelines = pipelines
        self.config = config
        self.costs = CostModel(default_max_batch=max_batch_images)
        self.state = ControllerState()
        window = config.objective_s or 1.0  # rates over about one objective
        self.arrivals: ArrivalRates[Option] = ArrivalRates(window)  # per served option: what joins batches ahead
        self.asked: ArrivalRates[Option] = ArrivalRates(window)  # per asked option: the demand
        self.quality: dict[Option, dict[str, float]] = {
            Option(name, k): q for name, p in pipelines.items() for k, q in quality_rows(p.manifest).items() if q
        }

    # --- what the engine feeds it -----------------------------------------------------------------

    def use_profile(self, profile: CostProfile, max_batch_images: int) -> None:
        """A model's warm-up cost profile and the batch bound its scheduler uses."""
        self.costs.use_profile(profile.model, profile.steps, profile.seconds, max_batch_images)

    def observe(self, model: str, steps: int, images: int, seconds: float) -> None:
        """A batch (steps: all of them) or a step-level iteration (steps=1) took `seconds`."""
        self.costs.observe(model, steps, images, seconds)

    # --- routing ----------------------------------------------------------------------------------

    def hint(self, request: GenerateRequest) -> Hint:
        """The request's hint, or the deployment's default; InvalidArgument naming `quality`."""
        if request.quality is None:
            return self.config.hint
        if request.quality not in HINTS:
            raise InvalidArgument("quality", f"quality must be one of {', '.join(HINTS)}, not {request.quality!r}")
        return request.quality  # type: ignore[return-value]

    def route(self, request: GenerateRequest, resolved: ResolvedRequest, backlog: Backlog, now: float) -> Routing:
        """Decide where `resolved` (the request as asked, checked) runs, given what is ahead of it."""
        hint = self.hint(request)
        asked = Option(resolved.model, resolved.steps)
        cls = prompt_class(resolved.prompt)
        options = [asked, *self.alternatives(request, resolved)]
        units = self._unit_costs(options)
        cheaper = [o for o in options[1:] if units[o] < units[asked]]
        predicted: dict[Option, float | None] = {}
        if self.config.objective_s is not None:  # without one, nothing is decided by time
            backlog = replace(backlog, arrivals=self.arrivals.rates(now))
            predicted = predictions(backlog, [asked] if hint == "best" else options, resolved.n, self.costs)

        def candidate(o: Option) -> Candidate:
            return Candidate(o, self.quality.get(o, {}), units[o], predicted.get(o))

        self.asked.add(asked, resolved.n, now)
        situation = Situation(
            hint, cls, candidate(asked), tuple(candidate(o) for o in cheaper), now, demand=self.demand(now)
        )
        decision, self.state = decide(situation, self.config, self.state)
        if not decision.reject:
            self.arrivals.add(decision.option, resolved.n, now)
        return self._routing(hint, asked, cls, decision)

    def served_request(self, request: GenerateRequest, resolved: ResolvedRequest, served: Option) -> ResolvedRequest:
        """`resolved` moved to `served`: the same prompt, seeds and explicit settings."""
        if served == Option(resolved.model, resolved.steps):
            return resolved
        return replace(resolved, model=served.model, steps=served.steps, guidance=self._guidance(request, served.model))

    def alternatives(self, request: GenerateRequest, resolved: ResolvedRequest) -> list[Option]:
        """The evaluated options other than the asked one that can run this request."""
        asked = Option(resolved.model, resolved.steps)
        resolution = self.pipelines[resolved.model].manifest.resolution
        out = []
        for option in self.quality:
            p = self.pipelines[option.model]
            if option == asked or p.manifest.resolution != resolution:
                continue
            job = ImageJob(resolved.prompt, resolved.seed, option.steps, self._guidance(request, option.model))
            job = replace(job, negative_prompt=resolved.negative_prompt)
            try:
                p.check(job)
            except EngineError:
                continue
            out.append(option)
        return out

    def demand(self, now: float) -> float | None:
        """Machine seconds per second the recent requests ask for, on the options they asked for at
        full batch (1: the machine's capacity); None until every asked option has a profile."""
        total = 0.0
        for option, rate in self.asked.rates(now).items():
            unit = self.costs.unit_seconds(option.model, option.steps)
            if unit is None:
                return None
            total += rate * unit
        return total

    def _guidance(self, request: GenerateRequest, model: str) -> float:
        return self.pipelines[model].manifest.guidance.default if request.guidance is None else request.guidance

    def _unit_costs(self, options: list[Option]) -> dict[Option, float]:
        """Cost per image of each option: profiled seconds at full batch if every option has a
        profile, else network evaluations per image (the same unit for all, so ratios hold)."""
        seconds = {o: self.costs.unit_seconds(o.model, o.steps) for o in options}
        if all(s is not None for s in seconds.values()):
            return seconds  # type: ignore[return-value]
        return {o: float(o.steps * self.pipelines[o.model].evaluations_per_image_step) for o in options}

    def _routing(self, hint: Hint, asked: Option, cls: str, d: Decision) -> Routing:
        return Routing(
            hint=hint,
            asked=asked,
            served=d.option,
            reason=d.reason,
            prompt_class=cls,
            predicted_s=d.predicted_s,
            objective_s=self.config.objective_s,
            pressure=d.pressure,
            reject=d.reject,
        )
