"""The engine's loop under step-level scheduling (`scheduling="step"`): one denoiser evaluation per
iteration over all in-flight images of a model, requests admitted and answered between iterations.

Each turn of the loop, on the event loop: drop the images of requests whose caller left (client
disconnect or deadline: their future is done), admit queued images first come, first admitted up
to each model's max batch (`select_admissions`), then hand one iteration to the runner thread,
which encodes the new prompts, runs `StepBatch.iterate` for one model and returns the images that
finished. A request is answered as soon as its last image is done. Models with in-flight images
take turns, one iteration each, so no model waits for another's requests to finish.

Memory is bounded: in-flight images per model never exceed its max batch, and the queue keeps its
`queue_limit_images` bound. There is no max wait: a request that arrives while the runner is busy
joins at the next iteration, and an idle runner starts at once.

Metrics: `fewstep_step_iterations_total` (rate = iterations per second), the
`fewstep_step_iteration_seconds` histogram, the `fewstep_in_flight_images` gauge; the admission
wait is `fewstep_queue_wait_seconds` (arrival to first image admitted) and each iteration's size is
observed in `fewstep_batch_size_images`.

Implements `service.engine.scheduler.Scheduler` over a `SchedulerContext` (it never sees the
engine); `service.engine.request_loop.RequestLoop` is the request-level one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from service.engine.profile import BatchLimits
from service.engine.queue import Ticket
from service.engine.scheduler import LoopState, SchedulerContext
from service.engine.step_scheduler import Iteration, StepBatch, select_admissions
from service.errors import BatchFailed
from service.pipeline import ImageJob

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Progress:
    """A request with images admitted: how many are in, how many done, and their images so far."""

    ticket: Ticket
    images: list[np.ndarray | None]
    admitted: int = 0
    done: int = 0
    batch_images: int = 0  # the largest iteration it ran in


@dataclass
class _Work:
    """One runner call: images to admit (any model) and the model to iterate."""

    model: str
    admit: list[tuple[Ticket, list[ImageJob], int]] = field(default_factory=list)


@dataclass
class _Outcome:
    failed: list[tuple[Ticket, Exception]]
    iteration: Iteration | None
    error: Exception | None
    seconds: float


class StepLoop(LoopState):
    """Drives one `StepBatch` per model from the event loop; owns nothing the engine's callers see."""

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.batches = {name: StepBatch(p) for name, p in ctx.pipelines.items()}
        self.progress: dict[Ticket, _Progress] = {}
        self.limits: dict[str, BatchLimits] = {}
        self._last_model: str | None = None

    @property
    def in_flight_images(self) -> int:
        return sum(len(b) for b in self.batches.values())

    def use_limits(self, limits: Mapping[str, BatchLimits]) -> None:
        """Per-model bounds on in-flight images (the max wait has no meaning here)."""
        self.limits = dict(limits)

    def max_batch_images(self, model: str) -> int:
        limits = self.limits.get(model)
        return limits.max_batch_images if limits else self.ctx.max_batch_images

    async def run(self) -> None:
        queue = self.ctx.queue
        while True:
            queue.arm()
            self._reap()
            work = self._plan(time.monotonic())
            if work is None:
                self._busy = False
                self._running = []
                await queue.wait()
                continue
            self._busy = True
            self._running = [p.ticket for p in self.progress.values()]
            outcome = await self.ctx.runner.call(self._execute, work)
            self._finish(work.model, outcome)

    # --- on the event loop -----------------------------------------------------------------------

    def _reap(self) -> None:
        """Free the slots of requests whose caller left (their future is cancelled) or that failed."""
        for ticket in list(self.progress):
            if ticket.future.done():
                dropped = self.batches[ticket.model].drop(ticket)
                del self.progress[ticket]
                self.ctx.queue.remove(ticket)
                if dropped and ticket.future.cancelled():
                    log.debug("dropped %d in-flight images of a request that left", dropped)
        self._update_gauges()

    def _plan(self, now: float) -> _Work | None:
        """Admit what fits, first come first admitted, and choose the model to iterate (None: idle)."""
        free = {name: self.max_batch_images(name) - len(b) for name, b in self.batches.items()}

        def waiting(t: Ticket) -> int:
            p = self.progress.get(t)
            return t.images - (p.admitted if p else 0)

        admit: list[tuple[Ticket, list[ImageJob], int]] = []
        arriving: set[str] = set()
        for ticket, take in select_admissions(self.ctx.queue.snapshot(), free, lambda t: t.model, waiting):
            p = self.progress.get(ticket)
            if p is None:
                p = self.progress[ticket] = _Progress(ticket, [None] * ticket.images)
                ticket.started_at = now
                self.ctx.metrics.queue_wait.labels(ticket.model).observe(now - ticket.enqueued_at)
            admit.append((ticket, ticket.jobs[p.admitted : p.admitted + take], p.admitted))
            p.admitted += take
            arriving.add(ticket.model)
            if p.admitted == ticket.images:
                self.ctx.queue.remove(ticket)
        models = [name for name, b in self.batches.items() if len(b) or name in arriving]
        if not models:
            return None
        order = list(self.batches)
        start = 0 if self._last_model is None else order.index(self._last_model) + 1
        rotated = order[start:] + order[:start]
        model = next(name for name in rotated if name in models)
        self._last_model = model
        return _Work(model, admit)

    def _finish(self, model: str, outcome: _Outcome) -> None:
        metrics = self.ctx.metrics
        for ticket, error in outcome.failed:
            metrics.rejected.labels("backend_error").inc()
            self._fail(ticket, error)
        if outcome.error is not None:
            metrics.batch_failures.labels(model).inc()
            cause = outcome.error
            error = BatchFailed(f"the backend failed on this request's batch: {type(cause).__name__}: {cause}")
            owners = {t for t in self.progress if t.model == model}
            metrics.rejected.labels("backend_error").inc(len(owners))
            for ticket in owners:
                self._fail(ticket, error)
        it = outcome.iteration
        if it is not None and it.size:
            metrics.step_iterations.labels(model).inc()
            metrics.step_iteration_seconds.labels(model).observe(outcome.seconds)
            metrics.batch_size.labels(model).observe(it.size)
            steps = self.ctx.pipelines[model].manifest.default_steps
            self.ctx.cost.observe(outcome.seconds * steps)  # Retry-After: a full pass of the default step count
            for p in self.progress.values():
                if p.ticket.model == model:
                    p.batch_images = max(p.batch_images, it.size)
            done = time.monotonic()
            for im in it.finished:
                p = self.progress.get(im.owner)  # type: ignore[call-overload]
                if p is None:
                    continue
                p.images[im.index] = im.image
                p.done += 1
                if p.done == p.ticket.images:
                    self._answer(p, done)
        self._update_gauges()

    def _answer(self, p: _Progress, done: float) -> None:
        t = p.ticket
        del self.progress[t]
        self.ctx.metrics.images.labels(t.model).inc(t.images)
        started = t.started_at or done
        t.succeed(np.stack(p.images), done - started, done, p.batch_images)  # type: ignore[arg-type]

    def _fail(self, ticket: Ticket, error: Exception) -> None:
        self.batches[ticket.model].drop(ticket)
        self.progress.pop(ticket, None)
        self.ctx.queue.remove(ticket)
        ticket.fail(error)

    def _update_gauges(self) -> None:
        for name, b in self.batches.items():
            self.ctx.metrics.in_flight_images.labels(name).set(len(b))

    # --- on the runner thread --------------------------------------------------------------------

    def _execute(self, work: _Work) -> _Outcome:
        failed: list[tuple[Ticket, Exception]] = []
        for ticket, jobs, first in work.admit:
            try:
                self.batches[ticket.model].admit(ticket, jobs, first)
            except Exception as e:  # the text encoder failed: only this request fails
                log.exception("admitting %d images for %s failed", len(jobs), ticket.model)
                failed.append((ticket, BatchFailed(f"the backend failed on this request: {type(e).__name__}: {e}")))
        start = time.perf_counter()
        try:
            iteration = self.batches[work.model].iterate()
        except Exception as e:  # only this model's in-flight requests fail; the engine stays ready
            log.exception("step iteration for %s failed", work.model)
            return _Outcome(failed, None, e, time.perf_counter() - start)
        return _Outcome(failed, iteration, None, time.perf_counter() - start)
