"""The engine: admits requests into a bounded queue, forms batches with the policy, runs them.

One asyncio task (the batch loop) owns the queue: whenever the runner is free it asks the policy
for the next batch and hands it to the runner thread, so the loop never blocks on compute. Each
caller of `generate` awaits its own future with its own deadline; leaving early (deadline or
client disconnect, which cancels the caller) removes the request from the queue if its batch has
not started, and otherwise lets the batch finish without it (a running backend call cannot be
interrupted). A backend exception fails only the requests of that batch.

With `scheduling="step"` the batch loop is `service.engine.step_loop.StepLoop` instead: images join
and leave the running batch between sampler steps, and a caller that leaves frees its slots at
the next step. Everything else here (admission, deadlines, drain) is the same in both modes.

With `profile_max_batch` / `profile_max_wait` set, warm-up also times each model's batch cost per
size and replaces the configured bounds with the derived ones (`service.engine.profile`).

States: starting (loaded, warming up) -> ready -> draining (SIGTERM: no admission, queued work
still runs) -> stopped. Only `ready` admits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from service.engine.policy import BatchPolicy, DynamicBatchPolicy
from service.engine.profile import BatchLimits, CostProfile, derive_limits, measure_costs
from service.engine.runner import Runner
from service.engine.types import (
    BatchFailed,
    DeadlineExceeded,
    GenerateRequest,
    GenerateResult,
    NotReady,
    QueueFull,
    UnknownModel,
)
from service.metrics import Metrics
from service.pipeline import ImageJob, JobError, Pipeline

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
    profile_budget_s: float = 5.0  # time the profile may take per model
    profile_batch_limit: int = 64  # largest batch size profiled
    scheduling: Literal["request", "step"] = "request"  # step: `service.engine.step_loop`

    @property
    def profiled(self) -> bool:
        return self.profile_max_batch or self.profile_max_wait


@dataclass(eq=False)
class _Ticket:
    """A queued request as the policy sees it (key, images, enqueued_at), plus its future."""

    request: GenerateRequest
    key: Hashable
    images: int
    enqueued_at: float
    deadline: float
    future: asyncio.Future[GenerateResult]
    started_at: float | None = None
    jobs: list[ImageJob] = field(default_factory=list)


class Engine:
    """The only thing the HTTP layer calls: `await engine.generate(request)`."""

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        config: EngineConfig | None = None,
        metrics: Metrics | None = None,
        policy: BatchPolicy | None = None,
    ) -> None:
        if not pipelines:
            raise ValueError("the engine needs at least one pipeline")
        self.pipelines: dict[str, Pipeline] = {}
        for p in pipelines:
            if p.name in self.pipelines:
                raise ValueError(f"two bundles are named {p.name!r}; model names must be unique")
            self.pipelines[p.name] = p
        self.config = config or EngineConfig()
        self.metrics = metrics or Metrics()
        self.metrics.add_models(list(self.pipelines.values()))
        self.policy = policy or DynamicBatchPolicy(self.config.max_batch_images, self.config.max_wait_s)
        self._runner = Runner()
        self._queue: list[_Ticket] = []
        self._wake = asyncio.Event()
        self._busy = False
        self._loop_task: asyncio.Task[None] | None = None
        self._batch_task: asyncio.Task[None] | None = None
        self._running: list[_Ticket] = []
        self._batch_s_ema: float | None = None
        self.state: State = "starting"
        self.failure: str | None = None
        self.cost_profiles: dict[str, CostProfile] = {}
        self.batch_limits: dict[str, BatchLimits] = {}

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batch loop (admission opens after `warm_up`)."""
        if self._loop_task is None:
            if self.config.scheduling == "step":
                from service.engine.step_loop import StepLoop

                loop = StepLoop(self).run()
            else:
                loop = self._batch_loop()
            self._loop_task = asyncio.create_task(loop, name="fewstep-batcher")

    async def warm_up(self, warm: bool = True) -> None:
        """Run one image per model and step count on the runner, then admit requests."""
        try:
            if warm:
                await self._runner.warm(list(self.pipelines.values()))
                if self.config.profiled and isinstance(self.policy, DynamicBatchPolicy):
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
        """Time each model's batches by size and set the policy's per-model bounds from the profile."""
        c = self.config
        limits: dict[Hashable, tuple[int, float]] = {}
        for name, p in self.pipelines.items():
            steps = min(p.manifest.steps)  # cost scales with steps; the per-image ratios do not

            async def run(b: int, p: Pipeline = p, steps: int = steps) -> float:
                jobs = [ImageJob(f"profile {i}", i, steps, p.manifest.guidance.default) for i in range(b)]
                return (await self._runner.run(p, jobs))[1]

            limit = min(c.profile_batch_limit, c.queue_limit_images)
            profile = await measure_costs(run, name, steps, max_batch=limit, budget_s=c.profile_budget_s)
            derived = derive_limits(profile)
            chosen = BatchLimits(
                derived.max_batch_images if c.profile_max_batch else c.max_batch_images,
                derived.max_wait_s if c.profile_max_wait else c.max_wait_s,
            )
            self.cost_profiles[name], self.batch_limits[name] = profile, chosen
            for k in p.manifest.steps:
                limits[(name, k)] = (chosen.max_batch_images, chosen.max_wait_s)
            ms = ", ".join(f"{b}: {s * 1000:.1f}" for b, s in profile.seconds.items())
            log.info(
                "batch profile %s at %d steps (ms per batch: %s): gain %.2f; max_batch_images %d, max_wait_s %.4f",
                name, steps, ms, profile.gain, chosen.max_batch_images, chosen.max_wait_s,
            )  # fmt: skip
        policy = self.policy
        assert isinstance(policy, DynamicBatchPolicy)
        self.policy = DynamicBatchPolicy(policy.max_batch_images, policy.max_wait_s, limits)

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
        """Stop admitting (new requests get 503); queued and running batches still complete."""
        if self.state in ("starting", "ready", "failed"):
            log.info("draining: %d queued requests", len(self._queue))
            self.state = "draining"
            self.metrics.ready.set(0)

    @property
    def queued_images(self) -> int:
        """Images waiting in the queue (the quantity `queue_limit_images` bounds)."""
        return sum(t.images for t in self._queue)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._busy

    async def drain(self, timeout_s: float) -> bool:
        """Close admission and wait up to `timeout_s` for the accepted work; True if all finished."""
        self.begin_drain()
        end = time.monotonic() + timeout_s
        while not self.idle and time.monotonic() < end:
            await asyncio.sleep(0.01)
        return self.idle

    async def stop(self, timeout_s: float = 0.0) -> None:
        """Drain for up to `timeout_s`, fail whatever is left with 503, and stop the loop and runner."""
        if self.state == "stopped":
            return
        drained = await self.drain(timeout_s)
        if not drained:
            log.warning("drain timed out with %d requests queued", len(self._queue))
        self.state = "stopped"
        for t in self._queue:
            if not t.future.done():
                t.future.set_exception(NotReady("the service stopped before this request ran", "draining"))
        for t in self._running:  # a batch still computing after the drain timeout: its result is abandoned
            if not t.future.done():
                t.future.set_exception(NotReady("the service stopped while this request computed", "draining"))
        self._queue.clear()
        self._update_gauges()
        for task in (self._loop_task, self._batch_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._runner.close()

    # --- admission -------------------------------------------------------------------------------

    def pipeline(self, model: str) -> Pipeline:
        try:
            return self.pipelines[model]
        except KeyError:
            raise UnknownModel(f"model {model!r} is not loaded; models: {sorted(self.pipelines)}") from None

    async def generate(self, request: GenerateRequest) -> GenerateResult:
        """Queue `request`, wait for its batch, return its images. Raises an `EngineError` or `JobError`."""
        try:
            ticket = self._admit(request)
        except (UnknownModel, QueueFull, NotReady) as e:
            self.metrics.reject(e.reason)
            raise
        except JobError:
            self.metrics.reject("invalid")
            raise
        self.metrics.in_flight.inc()
        try:
            remaining = ticket.deadline - time.monotonic()
            return await asyncio.wait_for(asyncio.shield(ticket.future), max(remaining, 0.0))
        except TimeoutError:
            self._leave(ticket)
            self.metrics.reject("deadline")
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

    def resolve(self, request: GenerateRequest) -> GenerateRequest:
        """`request` with the model's default steps and guidance filled in; JobError for a wrong size."""
        m = self.pipeline(request.model).manifest
        for name, value in (("width", request.width), ("height", request.height)):
            if value is not None and value != m.resolution:
                raise JobError(name, f"model {m.name!r} generates {m.resolution}x{m.resolution} images only")
        return dataclasses.replace(
            request,
            steps=m.default_steps if request.steps is None else request.steps,
            guidance=m.guidance.default if request.guidance is None else request.guidance,
        )

    def _admit(self, request: GenerateRequest) -> _Ticket:
        request = self.resolve(request)
        pipeline = self.pipeline(request.model)
        steps, guidance = int(request.steps or 0), float(request.guidance or 0.0)  # set by resolve()
        jobs = [ImageJob(request.prompt, seed, steps, guidance, request.negative_prompt) for seed in request.seeds]
        for job in jobs:
            pipeline.check(job)
        if self.state != "ready":
            reason = "draining" if self.state in ("draining", "stopped") else "not_ready"
            raise NotReady(f"not accepting requests: {self.not_ready_reason()}", reason)
        queued = self.queued_images
        if queued + request.n > self.config.queue_limit_images:
            raise QueueFull(
                f"queue full ({queued} images queued, limit {self.config.queue_limit_images})",
                self._retry_after_s(queued + request.n, self.max_batch_images(request.model)),
            )
        now = time.monotonic()
        ticket = _Ticket(
            request=request,
            key=(request.model, request.steps),
            images=request.n,
            enqueued_at=now,
            deadline=now + self.config.request_timeout_s,
            future=asyncio.get_running_loop().create_future(),
            jobs=jobs,
        )
        self._queue.append(ticket)
        self._update_gauges()
        self._wake.set()
        return ticket

    def _leave(self, ticket: _Ticket) -> bool:
        """Drop a request whose caller left; True if it was still queued (its batch had not started)."""
        if not ticket.future.done():
            ticket.future.cancel()
        if ticket in self._queue:
            self._queue.remove(ticket)
            self._update_gauges()
            self._wake.set()
            return True
        return False

    def _retry_after_s(self, images_ahead: int, max_batch_images: int) -> float:
        batches = math.ceil(images_ahead / max_batch_images)
        return max(1.0, math.ceil(batches * (self._batch_s_ema or 1.0)))

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))
        self.metrics.queue_images.set(self.queued_images)

    # --- batching --------------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while True:
            self._wake.clear()
            wake_at = None
            if not self._busy:
                decision = self.policy.select(self._queue, time.monotonic())
                if decision.batch:
                    self._dispatch(decision.batch)
                    continue
                wake_at = decision.wake_at
            timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _dispatch(self, batch: list[_Ticket]) -> None:
        now = time.monotonic()
        model = batch[0].request.model
        for t in batch:
            self._queue.remove(t)
            t.started_at = now
            self.metrics.queue_wait.labels(model).observe(now - t.enqueued_at)
        self._update_gauges()
        self._busy = True
        self._running = batch
        self._batch_task = asyncio.create_task(self._run(batch), name="fewstep-batch")

    async def _run(self, batch: list[_Ticket]) -> None:
        model = batch[0].request.model
        pipeline = self.pipelines[model]
        jobs = [job for t in batch for job in t.jobs]
        try:
            images, seconds = await self._runner.run(pipeline, jobs)
        except Exception as e:  # only this batch fails; the engine stays ready
            log.exception("batch of %d images for %s failed", len(jobs), model)
            self.metrics.batch_failures.labels(model).inc()
            self.metrics.rejected.labels("backend_error").inc(len(batch))
            error = BatchFailed(f"the backend failed on this request's batch: {type(e).__name__}: {e}")
            for t in batch:
                if not t.future.done():
                    t.future.set_exception(error)
        else:
            self._batch_s_ema = seconds if self._batch_s_ema is None else 0.8 * self._batch_s_ema + 0.2 * seconds
            self.metrics.batch_size.labels(model).observe(len(jobs))
            self.metrics.batch_compute.labels(model).observe(seconds)
            self.metrics.images.labels(model).inc(len(jobs))
            done = time.monotonic()
            offset = 0
            for t in batch:
                req = t.request
                result = GenerateResult(
                    model=model,
                    steps=req.steps or 0,
                    guidance=req.guidance if req.guidance is not None else 0.0,
                    images=images[offset : offset + t.images],
                    seeds=t.request.seeds,
                    queue_s=(t.started_at or done) - t.enqueued_at,
                    compute_s=seconds,
                    total_s=done - t.enqueued_at,
                    batch_images=len(jobs),
                )
                offset += t.images
                if not t.future.done():
                    t.future.set_result(result)
        finally:
            self._busy = False
            self._running = []
            self._wake.set()
