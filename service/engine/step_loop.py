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
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.engine.step_scheduler import Iteration, StepBatch, select_admissions
from service.engine.types import BatchFailed, GenerateResult
from service.pipeline import ImageJob

if TYPE_CHECKING:
    from service.engine.engine import Engine, _Ticket

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Progress:
    """A request with images admitted: how many are in, how many done, and their images so far."""

    ticket: _Ticket
    images: list[np.ndarray | None]
    admitted: int = 0
    done: int = 0
    batch_images: int = 0  # the largest iteration it ran in


@dataclass
class _Work:
    """One runner call: images to admit (any model) and the model to iterate."""

    model: str
    admit: list[tuple[_Ticket, list[ImageJob], int]] = field(default_factory=list)


@dataclass
class _Outcome:
    failed: list[tuple[_Ticket, Exception]]
    iteration: Iteration | None
    error: Exception | None
    seconds: float


class StepLoop:
    """Drives `StepBatch`es from the engine's event loop; owns nothing the engine's callers see."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.batches = {name: StepBatch(p) for name, p in engine.pipelines.items()}
        self.progress: dict[_Ticket, _Progress] = {}
        self._last_model: str | None = None

    @property
    def in_flight_images(self) -> int:
        return sum(len(b) for b in self.batches.values())

    async def run(self) -> None:
        e = self.engine
        while True:
            e._wake.clear()
            self._reap()
            work = self._plan(time.monotonic())
            if work is None:
                e._busy = False
                e._running = []
                await e._wake.wait()
                continue
            e._busy = True
            e._running = [p.ticket for p in self.progress.values()]
            outcome = await e._runner.call(self._execute, work)
            self._finish(work.model, outcome)

    # --- on the event loop -----------------------------------------------------------------------

    def _reap(self) -> None:
        """Free the slots of requests whose caller left (their future is cancelled) or that failed."""
        for ticket in list(self.progress):
            if ticket.future.done():
                dropped = self.batches[ticket.request.model].drop(ticket)
                del self.progress[ticket]
                if ticket in self.engine._queue:
                    self.engine._queue.remove(ticket)
                if dropped and ticket.future.cancelled():
                    log.debug("dropped %d in-flight images of a request that left", dropped)
        self._update_gauges()

    def _plan(self, now: float) -> _Work | None:
        """Admit what fits, first come first admitted, and choose the model to iterate (None: idle)."""
        e = self.engine
        free = {name: e.max_batch_images(name) - len(b) for name, b in self.batches.items()}

        def waiting(t: _Ticket) -> int:
            p = self.progress.get(t)
            return t.images - (p.admitted if p else 0)

        admit: list[tuple[_Ticket, list[ImageJob], int]] = []
        arriving: set[str] = set()
        for ticket, take in select_admissions(e._queue, free, lambda t: t.request.model, waiting):
            p = self.progress.get(ticket)
            if p is None:
                p = self.progress[ticket] = _Progress(ticket, [None] * ticket.images)
                ticket.started_at = now
                e.metrics.queue_wait.labels(ticket.request.model).observe(now - ticket.enqueued_at)
            admit.append((ticket, ticket.jobs[p.admitted : p.admitted + take], p.admitted))
            p.admitted += take
            arriving.add(ticket.request.model)
            if p.admitted == ticket.images:
                e._queue.remove(ticket)
        if admit:
            e._update_gauges()
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
        e = self.engine
        for ticket, error in outcome.failed:
            e.metrics.rejected.labels("backend_error").inc()
            self._fail(ticket, error)
        if outcome.error is not None:
            e.metrics.batch_failures.labels(model).inc()
            cause = outcome.error
            error = BatchFailed(f"the backend failed on this request's batch: {type(cause).__name__}: {cause}")
            owners = {t for t, p in self.progress.items() if t.request.model == model}
            e.metrics.rejected.labels("backend_error").inc(len(owners))
            for ticket in owners:
                self._fail(ticket, error)
        it = outcome.iteration
        if it is not None and it.size:
            e.metrics.step_iterations.labels(model).inc()
            e.metrics.step_iteration_seconds.labels(model).observe(outcome.seconds)
            e.metrics.batch_size.labels(model).observe(it.size)
            steps = e.pipelines[model].manifest.default_steps
            per_batch = outcome.seconds * steps  # Retry-After: a full pass of the default step count
            e._batch_s_ema = per_batch if e._batch_s_ema is None else 0.8 * e._batch_s_ema + 0.2 * per_batch
            for p in self.progress.values():
                if p.ticket.request.model == model:
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
        req = t.request
        started = t.started_at or done
        self.engine.metrics.images.labels(req.model).inc(t.images)
        if t.future.done():
            return
        t.future.set_result(
            GenerateResult(
                model=req.model,
                steps=req.steps or 0,
                guidance=req.guidance if req.guidance is not None else 0.0,
                images=np.stack(p.images),  # type: ignore[arg-type]
                seeds=req.seeds,
                queue_s=started - t.enqueued_at,
                compute_s=done - started,
                total_s=done - t.enqueued_at,
                batch_images=p.batch_images,
            )
        )

    def _fail(self, ticket: _Ticket, error: Exception) -> None:
        self.batches[ticket.request.model].drop(ticket)
        self.progress.pop(ticket, None)
        if ticket in self.engine._queue:
            self.engine._queue.remove(ticket)
        if not ticket.future.done():
            ticket.future.set_exception(error)

    def _update_gauges(self) -> None:
        for name, b in self.batches.items():
            self.engine.metrics.in_flight_images.labels(name).set(len(b))
        self.engine._update_gauges()

    # --- on the runner thread --------------------------------------------------------------------

    def _execute(self, work: _Work) -> _Outcome:
        failed: list[tuple[_Ticket, Exception]] = []
        for ticket, jobs, first in work.admit:
            try:
                self.batches[ticket.request.model].admit(ticket, jobs, first)
            except Exception as e:  # the text encoder failed: only this request fails
                log.exception("admitting %d images for %s failed", len(jobs), ticket.request.model)
                failed.append((ticket, BatchFailed(f"the backend failed on this request: {type(e).__name__}: {e}")))
        start = time.perf_counter()
        try:
            iteration = self.batches[work.model].iterate()
        except Exception as e:  # only this model's in-flight requests fail; the engine stays ready
            log.exception("step iteration for %s failed", work.model)
            return _Outcome(failed, None, e, time.perf_counter() - start)
        return _Outcome(failed, iteration, None, time.perf_counter() - start)
