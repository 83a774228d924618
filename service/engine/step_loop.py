"""The engine's loop under step-level scheduling (`scheduling="step"`): one denoiser evaluation per
iteration over all in-flight images of a model, requests admitted and answered between iterations.

Two halves, joined by an inbox:

- On the event loop (`run`): drop the images of requests whose caller left (client disconnect or
  deadline: their future is done), admit queued images first come, first admitted up to each
  model's max batch (`select_admissions`), and post those admissions and drops to the inbox. Each
  iteration's outcome comes back here: a request is answered as soon as its last image is done.
- On the runner thread (`_drive`): take what the inbox holds, apply it (encoding the new prompts),
  run `StepBatch.iterate` for one model, hand the outcome to the event loop, and go straight on
  to the next iteration. Models with in-flight images take turns, one iteration each, so no
  model waits for another's requests to finish. The driver returns when nothing is in flight and
  the inbox is empty; the next admission starts it again.

Why the runner does not wait for the event loop between iterations: it did once (one runner call
per iteration, planned by the loop), and under load every iteration then waited 3.5-4.4 ms for an
event loop busy with HTTP work; on the H200's simulated cost curve that kept the backend 83-86%
busy against 98% at request level (BENCHMARKS.md, "Under a GPU's cost curve, simulated"). Now an
admission or a drop lands at the first iteration boundary after the event loop posts it, and the
backend is idle only when nothing is in flight.

Memory is bounded: a model's batch never holds more than its max batch, and at most as many
admitted images again stand by on the driver's side (their prompts are encoded only when they enter
the batch), so a slot that frees at a boundary is filled there rather than an iteration later; the
event loop counts a model's images from admission until it has seen them retire or dropped them
(`slots`) and admits only what fits under twice the max batch; the queue keeps its
`queue_limit_images` bound. There is no max wait: a request that arrives while an iteration runs
joins at the next one, and an idle runner starts at once. A request's queue wait ends when its
first image enters the batch.

Metrics: `fewstep_step_iterations_total` (rate = iterations per second), the
`fewstep_step_iteration_seconds` histogram, the `fewstep_in_flight_images` gauge; the admission
wait is `fewstep_queue_wait_seconds` (arrival to first image admitted) and each iteration's size is
observed in `fewstep_batch_size_images`.

Implements `service.engine.scheduler.Scheduler` over a `SchedulerContext` (it never sees the
engine); `service.engine.request_loop.RequestLoop` is the request-level one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from service.engine.profile import BatchLimits
from service.engine.queue import Ticket
from service.engine.scheduler import LoopState, SchedulerContext
from service.engine.slo import Backlog, Work
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
class _Command:
    """For the driver: admit `jobs` (the request's images from index `first`), or drop the
    request's images (`jobs` None)."""

    ticket: Ticket
    jobs: list[ImageJob] | None = None
    first: int = 0


@dataclass
class _Outcome:
    """One driver turn: admissions that failed, and the iteration it ran (if any) or its error."""

    model: str | None
    failed: list[tuple[Ticket, Exception]]
    iteration: Iteration | None
    error: Exception | None
    seconds: float
    owners: frozenset[Ticket] = frozenset()  # whose images the failed iteration held (with `error`)
    started: list[tuple[Ticket, float]] = field(default_factory=list)  # first image into the batch, when
    in_batch: dict[str, int] = field(default_factory=dict)  # each model's batch after the turn
    remaining: dict[str, dict[int, int]] = field(default_factory=dict)  # per model: {steps left: images}


class StepLoop(LoopState):
    """Admissions and answers on the event loop, iterations back to back on the runner thread."""

    def __init__(self, ctx: SchedulerContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.batches = {name: StepBatch(p) for name, p in ctx.pipelines.items()}  # the driver's
        self.progress: dict[Ticket, _Progress] = {}
        self.limits: dict[str, BatchLimits] = {}
        # Per model: images admitted (standing by or in the batch) and not yet seen retired or dropped.
        self.slots: dict[str, int] = dict.fromkeys(self.batches, 0)
        self.in_batch: dict[str, int] = dict.fromkeys(self.batches, 0)  # as the driver last reported
        self.remaining: dict[str, dict[int, int]] = {name: {} for name in self.batches}  # likewise
        # The driver's: admitted images waiting for a slot in the batch, in admission order, and turns.
        self._standby: dict[str, deque[_Command]] = {name: deque() for name in self.batches}
        self._last_model: str | None = None
        self._lock = threading.Lock()  # guards the inbox and the driver's running/stopping flags
        self._inbox: list[_Command] = []
        self._driving = False
        self._stopping = False

    @property
    def in_flight_images(self) -> int:
        return sum(self.in_batch.values())

    def use_limits(self, limits: Mapping[str, BatchLimits]) -> None:
        """Per-model bounds on in-flight images (the max wait has no meaning here)."""
        self.limits = dict(limits)

    def max_batch_images(self, model: str) -> int:
        limits = self.limits.get(model)
        return limits.max_batch_images if limits else self.ctx.max_batch_images

    def backlog(self, now: float) -> Backlog:
        """Per model, the images in its batch by the steps they still need (as the driver last
        reported) and those admitted but standing by; then the images not yet admitted."""
        running: list[Work] = []
        for model in self.batches:
            in_batch = self.remaining.get(model, {})
            running += [Work(model, left, n) for left, n in sorted(in_batch.items())]
            mine = [
                (p.ticket.request.steps, p.admitted - p.done) for p in self.progress.values() if p.ticket.model == model
            ]
            standby = sum(n for _, n in mine) - sum(in_batch.values())
            if standby > 0:
                running.append(Work(model, max(k for k, _ in mine), standby))
        queued = []
        for t in self.ctx.queue.snapshot():
            p = self.progress.get(t)
            waiting = t.images - (p.admitted if p else 0)
            if waiting > 0:
                queued.append(Work(t.model, t.request.steps, waiting))
        return Backlog("step", tuple(queued), tuple(running))

    async def run(self) -> None:
        queue = self.ctx.queue
        try:
            while True:
                queue.arm()
                self._reap()
                self._admit()
                self._update_state()
                await queue.wait()
        finally:
            with self._lock:  # the driver stops at its next iteration boundary
                self._stopping = True

    # --- on the event loop -----------------------------------------------------------------------

    def _reap(self) -> None:
        """Free the slots of requests whose caller left (their future is cancelled or timed out)."""
        for ticket in [t for t in self.progress if t.future.done()]:
            p = self.progress.pop(ticket)
            self.slots[ticket.model] -= p.admitted - p.done
            self.ctx.queue.remove(ticket)
            self._post([_Command(ticket)])
            if ticket.future.cancelled():
                log.debug("dropping %d in-flight images of a request that left", p.admitted - p.done)

    def _admit(self) -> None:
        """Admit what fits, first come first admitted, and post it to the driver.

        What fits is the max batch plus as many again standing by: images retire at the driver's
        boundaries, and a slot freed there is filled at once from the standby images instead of
        an iteration later, when the event loop has seen it free (under load, that lag alone would
        leave a 4-step image's slot empty one iteration in five)."""
        free = {name: 2 * self.max_batch_images(name) - self.slots[name] for name in self.batches}

        def waiting(t: Ticket) -> int:
            p = self.progress.get(t)
            return t.images - (p.admitted if p else 0)

        commands: list[_Command] = []
        for ticket, take in select_admissions(self.ctx.queue.snapshot(), free, lambda t: t.model, waiting):
            p = self.progress.get(ticket)
            if p is None:
                p = self.progress[ticket] = _Progress(ticket, [None] * ticket.images)
            commands.append(_Command(ticket, ticket.jobs[p.admitted : p.admitted + take], p.admitted))
            p.admitted += take
            self.slots[ticket.model] += take
            if p.admitted == ticket.images:
                self.ctx.queue.remove(ticket)
        self._post(commands)

    def _post(self, commands: list[_Command]) -> None:
        """Hand commands to the driver, starting it on the runner thread if it is not running."""
        if not commands:
            return
        with self._lock:
            self._inbox.extend(commands)
            start = not self._driving and not self._stopping
            self._driving = self._driving or start
        if start:
            loop = asyncio.get_running_loop()
            driver = asyncio.ensure_future(self.ctx.runner.call(self._drive, loop))
            driver.add_done_callback(self._driver_done)

    def _driver_done(self, driver: asyncio.Future[None]) -> None:
        if not driver.cancelled() and driver.exception() is not None:
            log.error("the step-level driver failed", exc_info=driver.exception())
            with self._lock:
                self._driving = False
        self.ctx.queue.wake()  # busy may have changed; anything left in the inbox restarts it

    def _finish(self, outcome: _Outcome) -> None:
        """An outcome from the driver, on the event loop: answer, fail, free slots, observe."""
        metrics = self.ctx.metrics
        self.in_batch.update(outcome.in_batch)
        self.remaining.update(outcome.remaining)
        for ticket, at in outcome.started:  # its wait ends when its first image enters the batch
            if ticket.started_at is None:
                ticket.started_at = at
                metrics.queue_wait.labels(ticket.model).observe(at - ticket.enqueued_at)
        for ticket, error in outcome.failed:
            metrics.rejected.labels("backend_error").inc()
            self._fail(ticket, error)
        model = outcome.model
        if model is not None and outcome.error is not None:
            metrics.batch_failures.labels(model).inc()
            cause = outcome.error
            error = BatchFailed(f"the backend failed on this request's batch: {type(cause).__name__}: {cause}")
            owners = [t for t in outcome.owners if t in self.progress]
            metrics.rejected.labels("backend_error").inc(len(owners))
            for ticket in owners:
                self._fail(ticket, error)
        it = outcome.iteration
        if model is not None and it is not None and it.size:
            metrics.step_iterations.labels(model).inc()
            metrics.step_iteration_seconds.labels(model).observe(outcome.seconds)
            metrics.batch_size.labels(model).observe(it.size)
            self.ctx.computed(model, 1, it.size, outcome.seconds)
            steps = self.ctx.pipelines[model].manifest.default_steps
            self.ctx.cost.observe(outcome.seconds * steps)  # Retry-After: a full pass of the default step count
            for p in self.progress.values():
                if p.ticket.model == model:
                    p.batch_images = max(p.batch_images, it.size)
            done = time.monotonic()
            for im in it.finished:
                p = self.progress.get(im.owner)  # type: ignore[call-overload]
                if p is None:  # its caller left, or it failed: its slots were freed then
                    continue
                self.slots[model] -= 1
                p.images[im.index] = im.image
                p.done += 1
                if p.done == p.ticket.images:
                    self._answer(p, done)
        self.ctx.queue.wake()  # slots were freed: admit again

    def _answer(self, p: _Progress, done: float) -> None:
        t = p.ticket
        del self.progress[t]
        self.ctx.metrics.images.labels(t.model).inc(t.images)
        started = t.started_at or done
        t.succeed(np.stack(p.images), done - started, done, p.batch_images)  # type: ignore[arg-type]

    def _fail(self, ticket: Ticket, error: Exception) -> None:
        p = self.progress.pop(ticket, None)
        if p is not None:
            self.slots[ticket.model] -= p.admitted - p.done
        self.ctx.queue.remove(ticket)
        self._post([_Command(ticket)])
        ticket.fail(error)

    def _update_state(self) -> None:
        """`busy`, `running` (read by the engine) and the in-flight gauges."""
        self._busy = self._driving or any(self.slots.values())
        self._running = [p.ticket for p in self.progress.values()]
        for name in self.batches:
            self.ctx.metrics.in_flight_images.labels(name).set(self.in_batch[name] if self.slots[name] else 0)

    # --- on the runner thread --------------------------------------------------------------------

    def _drive(self, loop: asyncio.AbstractEventLoop) -> None:
        """Apply the inbox, iterate one model, post the outcome; until nothing is in flight."""
        while True:
            with self._lock:
                commands, self._inbox = self._inbox, []
                idle = not any(len(b) for b in self.batches.values()) and not any(self._standby.values())
                if self._stopping or (not commands and idle):
                    self._driving = False
                    return
            outcome = self._turn(commands)
            try:
                loop.call_soon_threadsafe(self._finish, outcome)
            except RuntimeError:  # the event loop closed under us (the service stopped)
                with self._lock:
                    self._driving = False
                return

    def _turn(self, commands: list[_Command]) -> _Outcome:
        for c in commands:
            if c.jobs is None:
                self._drop(c.ticket)
            else:
                self._standby[c.ticket.model].append(c)
        for batch in self.batches.values():
            # A caller that left (its future is done) runs no further step: the event loop frees its
            # slots when it next looks (`_reap`), but this boundary may come first.
            for owner in {im.owner for im in batch.images if im.owner.future.done()}:  # type: ignore[attr-defined]
                self._drop(owner)  # type: ignore[arg-type]
        failed: list[tuple[Ticket, Exception]] = []
        started: list[tuple[Ticket, float]] = []
        for name in self.batches:
            self._fill(name, failed, started)
        model = self._next_model()
        in_batch = {name: len(b) for name, b in self.batches.items()}
        if model is None:
            return _Outcome(None, failed, None, None, 0.0, started=started, in_batch=in_batch, remaining=self._left())
        batch = self.batches[model]
        t0 = time.perf_counter()
        try:
            iteration = batch.iterate()
        except Exception as e:  # only this model's in-flight requests fail; the engine stays ready
            log.exception("step iteration for %s failed", model)
            owners = frozenset(im.owner for im in batch.images)
            for owner in owners:
                self._drop(owner)  # type: ignore[arg-type]  # and what of it still stands by
            in_batch[model] = len(batch)
            seconds = time.perf_counter() - t0
            return _Outcome(model, failed, None, e, seconds, owners, started, in_batch, self._left())  # type: ignore[arg-type]
        in_batch[model] = len(batch)
        seconds = time.perf_counter() - t0
        return _Outcome(
            model, failed, iteration, None, seconds, started=started, in_batch=in_batch, remaining=self._left()
        )

    def _left(self) -> dict[str, dict[int, int]]:
        """Per model, {steps still to run: images} of its batch (for the controller's backlog)."""
        out: dict[str, dict[int, int]] = {}
        for name, batch in self.batches.items():
            counts: dict[int, int] = {}
            for im in batch.images:
                left = im.plan.steps - im.i
                counts[left] = counts.get(left, 0) + 1
            out[name] = counts
        return out

    def _fill(self, model: str, failed: list[tuple[Ticket, Exception]], started: list[tuple[Ticket, float]]) -> None:
        """Move standby images into the model's batch while it has room, oldest first; a request
        larger than the room goes in part and the rest stays at the head of the line."""
        batch, line = self.batches[model], self._standby[model]
        room = self.max_batch_images(model) - len(batch)
        while line and room > 0:
            c = line[0]
            jobs = c.jobs or []
            take = min(room, len(jobs))
            try:
                batch.admit(c.ticket, jobs[:take], c.first)
            except Exception as e:  # the text encoder failed: only this request fails
                log.exception("admitting %d images for %s failed", take, model)
                self._drop(c.ticket)  # its images admitted earlier, and the rest of its line
                failed.append((c.ticket, BatchFailed(f"the backend failed on this request: {type(e).__name__}: {e}")))
                continue
            if c.first == 0:
                started.append((c.ticket, time.monotonic()))
            if take == len(jobs):
                line.popleft()
            else:
                line[0] = _Command(c.ticket, jobs[take:], c.first + take)
            room -= take

    def _drop(self, ticket: Ticket) -> None:
        """The request's images out of its batch and its standby line."""
        self.batches[ticket.model].drop(ticket)
        line = self._standby[ticket.model]
        if any(c.ticket is ticket for c in line):  # in place: `_fill` holds the line
            kept = [c for c in line if c.ticket is not ticket]
            line.clear()
            line.extend(kept)

    def _next_model(self) -> str | None:
        """The next model with in-flight images after the last one iterated (turns, one iteration each)."""
        order = list(self.batches)
        start = 0 if self._last_model is None else order.index(self._last_model) + 1
        for name in order[start:] + order[:start]:
            if len(self.batches[name]):
                self._last_model = name
                return name
        return None
