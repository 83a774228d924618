"""The engine: admits requests into a bounded queue, forms batches with the policy, runs them.

One asyncio task (the batch loop) owns the queue: whenever the runner is free it asks the policy
for the next batch and hands it to the runner thread, so the loop never blocks on compute. Each
caller of `generate` awaits its own future with its own deadline; leaving early (deadline or
client disconnect, which cancels the caller) removes the request from the queue if its batch has
not started, and otherwise lets the batch finish without it (a running backend call cannot be
interrupted). A backend exception fails only the requests of that batch.

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

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the batch loop (admission opens after `warm_up`)."""
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._batch_loop(), name="fewstep-batcher")

    async def warm_up(self, warm: bool = True) -> None:
        """Run one image per model and step count on the runner, then admit requests."""
        try:
            if warm:
                await self._runner.warm(list(self.pipelines.values()))
        except Exception as e:  # the service stays up and says why it is not ready
            log.exception("warm-up failed")
            self.failure = f"warm-up failed: {type(e).__name__}: {e}"
            self.state = "failed"
            return
        if self.state == "starting":
            self.state = "ready"
            self.metrics.ready.set(1)
            log.info("ready: %s", ", ".join(self.pipelines))

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
        queued = sum(t.images for t in self._queue)
        if queued + request.n > self.config.queue_limit_images:
            raise QueueFull(
                f"queue full ({queued} images queued, limit {self.config.queue_limit_images})",
                self._retry_after_s(queued + request.n),
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

    def _retry_after_s(self, images_ahead: int) -> float:
        batches = math.ceil(images_ahead / self.config.max_batch_images)
        return max(1.0, math.ceil(batches * (self._batch_s_ema or 1.0)))

    def _update_gauges(self) -> None:
        self.metrics.queue_depth.set(len(self._queue))
        self.metrics.queue_images.set(sum(t.images for t in self._queue))

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
