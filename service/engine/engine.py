"""The engine: admits requests into a bounded queue and answers their callers; a scheduler runs them.

Admission (model, job and size checks, the queue bound, readiness) happens here, into the
engine's `RequestQueue`. One asyncio task runs the scheduler (`service.engine.scheduler`), which
takes tickets from the queue and runs them on the runner thread, so the event loop never blocks
on compute: `RequestLoop` batches whole requests (`scheduling="request"`), `StepLoop` lets images
join and leave the running batch between sampler steps (`scheduling="step"`). Each caller of
`generate` awaits its own future with its own deadline; leaving early (deadline or client
disconnect, which cancels the caller) removes the request from the queue if it has not started,
and otherwise the scheduler lets the work finish without it (request-level) or frees its slots
at the next step (step-level). Everything here (admission, deadlines, drain) is the same in both
modes.

With `profile_max_batch` / `profile_max_wait` set, warm-up also times each model's batch cost per
size and replaces the configured bounds with the derived ones (`service.engine.profile`).

Every admitted request is routed (`service.engine.router`, over the pure `service.engine.slo`):
with a latency objective (`slo`) and the hint `auto`, a request predicted to finish late on the
option it asked for is served by a cheaper one of the family, where its prompt class loses least;
`best` is never moved, `fast` takes the cheapest. With an objective the warm-up profile is always
measured (the predictions need it), whether or not it sets the batch bounds. The result says what
was asked, what served and why (`GenerateResult.routing`), and the metrics count it.

States: starting (loaded, warming up) -> ready -> draining (SIGTERM: no admission, queued work
still runs) -> stopped. Only `ready` admits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from service.engine.policy import BatchPolicy, DynamicBatchPolicy
from service.engine.profile import BatchLimits, CostProfile, WaitRule, derive_limits, tuned_costs
from service.engine.queue import RequestQueue, Ticket
from service.engine.request_loop import RequestLoop
from service.engine.router import Router
from service.engine.runner import Runner
from service.engine.scheduler import Scheduler, SchedulerContext
from service.engine.slo import SloConfig
from service.engine.step_loop import StepLoop
from service.engine.types import GenerateRequest, GenerateResult, ResolvedRequest, Routing
from service.errors import (
    DeadlineExceeded,
    EngineError,
    InvalidArgument,
    NotReady,
    OverObjective,
    QueueFull,
    UnknownModel,
)
from service.metrics import Metrics
from service.pipeline import ImageJob, Pipeline
from service.tuning import TuningCache

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "failed", "draining", "stopped"]


@dataclass(frozen=True)
class EngineConfig:
    """The batching and admission bounds (see `service.settings.ServiceSettings` for their meaning)."""

    max_batch_images: int = 8
    max_wait_s: float = 0.01
    queue_limit_images: int = 256
    request_timeout_s: float = 60.0
    profile_max_batch: bool = False  # derive max_batch_images per model from the warm-up cost profile
    profile_max_wait: bool = False  # derive max_wait_s per model from it
    wait_rule: WaitRule = "greedy"  # how (service.engine.profile.derive_limits)
    profile_budget_s: float = 5.0  # time the profile may take per model
    profile_batch_limit: int = 64  # largest batch size profiled
    profile_settle_calls: int = 2  # untimed calls per new size before timing it (measure_costs)
    tuned_profile_budget_s: float = 20.0  # with a tuning cache: the profile's budget, once per machine
    scheduling: Literal["request", "step"] = "request"  # step: `service.engine.step_loop`
    slo: SloConfig = field(default_factory=SloConfig)  # the latency objective (none by default) and the controller

    @property
    def profiled(self) -> bool:
        return self.profile_max_batch or self.profile_max_wait

    @property
    def needs_profile(self) -> bool:
        """Warm-up measures the cost profile: for the bounds, or for the controller's predictions."""
        return self.profiled or self.slo.objective_s is not None


class Engine:
    """The only thing the HTTP layer calls: `await engine.generate(request)`."""

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        config: EngineConfig | None = None,
        metrics: Metrics | None = None,
        policy: BatchPolicy | None = None,
        tuning: TuningCache | None = None,
        router: Router | None = None,
    ) -> None:
        if not pipelines:
            raise ValueError("the engine needs at least one pipeline")
        self.pipelines: dict[str, Pipeline] = {}
        for p in pipelines:
            if p.name in self.pipelines:
                raise ValueError(f"two bundles are named {p.name!r}; model names must be unique")
            self.pipelines[p.name] = p
        self.config = config or EngineConfig()
        self.tuning = tuning
        self.metrics = metrics or Metrics()
        self.metrics.add_models(list(self.pipelines.values()))
        self.policy = policy or DynamicBatchPolicy(self.config.max_batch_images, self.config.max_wait_s)
        self.queue = RequestQueue(on_change=self._update_gauges)
        self.runner = Runner()
        self.context = SchedulerContext(
            self.pipelines, self.queue, self.runner, self.metrics, self.config.max_batch_images
        )
        self.scheduler: Scheduler = (
            StepLoop(self.context) if self.config.scheduling == "step" else RequestLoop(self.context, self.policy)
        )
        self.router = router or Router(self.pipelines, self.config.slo, self.config.max_batch_images)
        self.context.on_compute = self.router.observe
        self.metrics.slo_objective.set(self.config.slo.objective_s or 0.0)
        self._loop_task: asyncio.Task[None] | None = None
        self.state: State = "starting"
        self.failure: str | None = None
        self.cost_profiles: dict[str, CostProfile] = {}
        self.batch_limits: dict[str, BatchLimits] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the scheduler's loop (admission opens after `warm_up`)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self.scheduler.run(), name="fewstep-batcher")

    async def warm_up(self, warm: bool = True) -> None:
        """Run one image per model and step count on the runner, then admit requests."""
        try:
            if warm:
                await self.runner.warm(list(self.pipelines.values()))
                if self.config.needs_profile and isinstance(self.policy, DynamicBatchPolicy):
                    await self._profile_batching()
        except Exception as e:  # the service stays up and says why it is not ready
            log.exception("warm-up failed")
            self.failure = f"warm-up failed: {type(e).__name__}: {e}"
            self.state = "failed"
            return
        if self.state == "starting":
            self.state = "ready"
            self.metrics.ready.set(1)
            log.info("ready: %s", ", ".join(self.pipelines))

    async def _profile_batching(self) -> None:
        """Time each model's batches by size and give the scheduler per-model bounds from the profile."""
        c = self.config
        for name, p in self.pipelines.items():
            steps = min(p.manifest.steps)  # cost scales with steps; the per-image ratios do not

            async def run(b: int, p: Pipeline = p, steps: int = steps) -> float:
                jobs = [ImageJob(f"profile {i}", i, steps, p.manifest.guidance.default) for i in range(b)]
                return (await self.runner.run(p, jobs))[1]

            limit = min(c.profile_batch_limit, c.queue_limit_images)
            profile, reused = await tuned_costs(
                run, name, steps, self.tuning, p.identity, max_batch=limit, budget_s=c.profile_budget_s,
                tuned_budget_s=c.tuned_profile_budget_s, settle_calls=c.profile_settle_calls,
            )  # fmt: skip
            derived = derive_limits(profile, wait_rule=c.wait_rule)
            chosen = BatchLimits(
                derived.max_batch_images if c.profile_max_batch else c.max_batch_images,
                derived.max_wait_s if c.profile_max_wait else c.max_wait_s,
            )
            self.cost_profiles[name], self.batch_limits[name] = profile, chosen
            self.router.use_profile(profile, chosen.max_batch_images)
            ms = ", ".join(f"{b}: {s * 1000:.1f}" for b, s in profile.seconds.items())
            log.info(
                "batch profile %s at %d steps (ms per batch%s: %s): gain %.2f; max_batch_images %d, max_wait_s %.4f",
                name, steps, ", from the tuning cache" if reused else "", ms, profile.gain,
                chosen.max_batch_images, chosen.max_wait_s,
            )  # fmt: skip
        self.scheduler.use_limits(self.batch_limits)

    def max_batch_images(self, model: str) -> int:
        """The batch bound in force for `model` (profiled or configured)."""
        limits = self.batch_limits.get(model)
        return limits.max_batch_images if limits else self.config.max_batch_images

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def not_ready_reason(self) -> str:
        return {
            "starting": "warming up",
            "failed": self.failure or "warm-up failed",
            "draining": "draining: shutting down",
            "stopped": "stopped",
        }.get(self.state, "")

    def begin_drain(self) -> None:
        """Stop admitting (new requests get NotReady); queued and running work still completes."""
        if self.state in ("starting", "ready", "failed"):
            log.info("draining: %d queued requests", len(self.queue))
            self.state = "draining"
            self.metrics.ready.set(0)

    @property
    def queued_images(self) -> int:
        """Images waiting in the queue (the quantity `queue_limit_images` bounds)."""
        return self.queue.images

    @property
    def idle(self) -> bool:
        return not self.queue and not self.scheduler.busy

    async def drain(self, timeout_s: float) -> bool:
        """Close admission and wait up to `timeout_s` for the accepted work; True if all finished."""
        self.begin_drain()
        end = time.monotonic() + timeout_s
        while not self.idle and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return self.idle

    async def stop(self, timeout_s: float = 0.0) -> None:
        """Drain for up to `timeout_s`, fail whatever is left with NotReady, and stop the loop and runner."""
        if self.state == "stopped":
            return
        drained = await self.drain(timeout_s)
        if not drained:
            log.warning("drain timed out with %d requests queued", len(self.queue))
        self.state = "stopped"
        for t in self.queue.clear():
            t.fail(NotReady("the service stopped before this request ran", "draining"))
        for t in self.scheduler.running:  # still computing after the drain timeout: its result is abandoned
            t.fail(NotReady("the service stopped while this request computed", "draining"))
        task = self._loop_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.runner.close()

    # --- admission -------------------------------------------------------------------------------

    def pipeline(self, model: str) -> Pipeline:
        try:
            return self.pipelines[model]
        except KeyError:
            raise UnknownModel(f"model {model!r} is not loaded; models: {sorted(self.pipelines)}") from None

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        """Queue `request`, wait for its result, return its images. Raises an `EngineError`."""
        try:
            ticket = self._admit(request)
        except EngineError as e:  # refused at admission: counted by its reason
            self.metrics.reject(e.reason)
            raise
        self.metrics.in_flight.inc()
        objective = self.config.slo.objective_s
        try:
            remaining = ticket.deadline - time.monotonic()
            result = await asyncio.wait_for(asyncio.shield(ticket.future), max(remaining, 0.0))
            if objective is not None:
                self.metrics.finished(result.model, result.total_s, objective)
            return result
        except TimeoutError:
            self._leave(ticket)
            self.metrics.reject("deadline")
            if objective is not None:
                self.metrics.finished(ticket.model, None, objective)
            raise DeadlineExceeded(
                f"no result within the {self.config.request_timeout_s:g} s deadline "
                f"({'computing' if ticket.started_at else 'still queued'})"
            ) from None
        except asyncio.CancelledError:
            if self._leave(ticket):
                self.metrics.reject("disconnected")
            raise
        finally:
            self.metrics.in_flight.dec()

    def resolve(self, request: GenerateRequest) -> ResolvedRequest:
        """`request` with the model's default steps and guidance filled in; InvalidArgument for a wrong size."""
        m = self.pipeline(request.model).manifest
        for name, value in (("width", request.width), ("height", request.height)):
            if value is not None and value != m.resolution:
                raise InvalidArgument(name, f"model {m.name!r} generates {m.resolution}x{m.resolution} images only")
        return ResolvedRequest(
            model=request.model,
            prompt=request.prompt,
            seed=request.seed,
            n=request.n,
            steps=m.default_steps if request.steps is None else request.steps,
            guidance=m.guidance.default if request.guidance is None else request.guidance,
            negative_prompt=request.negative_prompt or "",
        )

    def _admit(self, request: GenerateRequest) -> Ticket:
        self.router.hint(request)  # an invalid hint is refused before anything else is looked at
        resolved = self.resolve(request)
        pipeline = self.pipeline(resolved.model)
        jobs = resolved.jobs()
        for job in jobs:
            pipeline.check(job)
        if self.state != "ready":
            reason = "draining" if self.state in ("draining", "stopped") else "not_ready"
            raise NotReady(f"not accepting requests: {self.not_ready_reason()}", reason)
        queued = self.queue.images
        if queued + resolved.n > self.config.queue_limit_images:
            raise QueueFull(
                f"queue full ({queued} images queued, limit {self.config.queue_limit_images})",
                self._retry_after_s(queued + resolved.n, self.max_batch_images(resolved.model)),
            )
        now = time.monotonic()
        routing = self.router.route(request, resolved, self.scheduler.backlog(now), now)
        if routing.reject:
            raise self._over_objective(routing)
        if routing.downgraded:
            resolved = self.router.served_request(request, resolved, routing.served)
            jobs = resolved.jobs()
        served = routing.served
        self.metrics.routed(
            routing.asked.model, served.model, served.steps, routing.reason, routing.predicted_s, routing.pressure
        )
        ticket = Ticket(
            request=resolved,
            key=(resolved.model, resolved.steps),
            images=resolved.n,
            enqueued_at=now,
            deadline=now + self.config.request_timeout_s,
            future=asyncio.get_running_loop().create_future(),
            jobs=jobs,
            routing=routing,
        )
        self.queue.push(ticket)
        return ticket

    def _over_objective(self, routing: Routing) -> OverObjective:
        predicted, objective = routing.predicted_s or 0.0, routing.objective_s or 0.0
        return OverObjective(
            f"predicted to finish in {predicted:.3f} s on {routing.served}, past the {objective:g} s objective "
            f"(the fastest option this request may run on; FEWSTEP_SLO__SHED refuses those)",
            max(1.0, math.ceil(predicted - objective)),
        )

    def _leave(self, ticket: Ticket) -> bool:
        """Drop a request whose caller left; True if it was still queued (it had not started)."""
        if not ticket.future.done():
            ticket.future.cancel()
        return self.queue.remove(ticket) > 0

    def _retry_after_s(self, images_ahead: int, max_batch_images: int) -> float:
        batches = math.ceil(images_ahead / max_batch_images)
        return max(1.0, math.ceil(batches * (self.context.cost.seconds or 1.0)))

    def _update_gauges(self, queue: RequestQueue) -> None:
        self.metrics.queue_depth.set(len(queue))
        self.metrics.queue_images.set(queue.images)
