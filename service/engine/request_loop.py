"""Request-level scheduling (`scheduling="request"`): whole requests batched, each batch run through
all its steps by one `Pipeline.generate` call.

Whenever the runner is free the loop asks the batching policy (`service.engine.policy`) for the
next batch and hands it to the runner thread, so the event loop never blocks on compute; while a
batch computes, the next one fills up in the queue. A caller that leaves before its batch starts
is removed from the queue by the engine; once its batch has started, the batch finishes without
it (a running backend call cannot be interrupted). A backend exception fails only the requests of
that batch.

Implements `service.engine.scheduler.Scheduler`; `service.engine.step_loop.StepLoop` is the
step-level one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from service.engine.policy import BatchPolicy, DynamicBatchPolicy
from service.engine.profile import BatchLimits
from service.engine.queue import Ticket
from service.engine.scheduler import LoopState, SchedulerContext
from service.engine.slo import Backlog, Work
from service.errors import BatchFailed

log = logging.getLogger(__name__)


class RequestLoop(LoopState):
    """Dispatches the policy's batches to the runner, one at a time."""

    def __init__(self, ctx: SchedulerContext, policy: BatchPolicy) -> None:
        super().__init__()
        self.ctx = ctx
        self.policy = policy
        self._batch_task: asyncio.Task[None] | None = None

    def use_limits(self, limits: Mapping[str, BatchLimits]) -> None:
        """Per-model bounds for the dynamic policy, keyed (model, steps) as it batches; a custom policy is kept."""
        policy = self.policy
        if not isinstance(policy, DynamicBatchPolicy):
            return
        keyed = {
            (name, k): (bound.max_batch_images, bound.max_wait_s)
            for name, bound in limits.items()
            for k in self.ctx.pipelines[name].manifest.steps
        }
        self.policy = DynamicBatchPolicy(policy.max_batch_images, policy.max_wait_s, keyed)

    def backlog(self, now: float) -> Backlog:
        """The batch computing (and for how long) and the queue, in the controller's terms."""
        running = tuple(Work(t.model, t.request.steps, t.images) for t in self._running)
        started = min((t.started_at for t in self._running if t.started_at is not None), default=now)
        queued = tuple(Work(t.model, t.request.steps, t.images) for t in self.ctx.queue.snapshot())
        return Backlog("request", queued, running, max(0.0, now - started))

    async def run(self) -> None:
        queue = self.ctx.queue
        try:
            while True:
                queue.arm()
                wake_at = None
                if not self._busy:
                    decision = self.policy.select(queue.snapshot(), time.monotonic())
                    if decision.batch:
                        self._dispatch(decision.batch)
                        continue
                    wake_at = decision.wake_at
                await queue.wait(None if wake_at is None else max(0.0, wake_at - time.monotonic()))
        finally:  # cancelled (the engine stops): abandon the batch in flight, if any
            task = self._batch_task
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _dispatch(self, batch: list[Ticket]) -> None:
        now = time.monotonic()
        model = batch[0].model
        for t in batch:
            t.started_at = now
            self.ctx.metrics.queue_wait.labels(model).observe(now - t.enqueued_at)
        self.ctx.queue.remove(*batch)
        self._busy = True
        self._running = batch
        self._batch_task = asyncio.create_task(self._run(batch), name="fewstep-batch")

    async def _run(self, batch: list[Ticket]) -> None:
        ctx, metrics = self.ctx, self.ctx.metrics
        model = batch[0].model
        jobs = [job for t in batch for job in t.jobs]
        try:
            images, seconds = await ctx.runner.run(ctx.pipelines[model], jobs)
        except Exception as e:  # only this batch fails; the engine stays ready
            log.exception("batch of %d images for %s failed", len(jobs), model)
            metrics.batch_failures.labels(model).inc()
            metrics.rejected.labels("backend_error").inc(len(batch))
            error = BatchFailed(f"the backend failed on this request's batch: {type(e).__name__}: {e}")
            for t in batch:
                t.fail(error)
        else:
            ctx.cost.observe(seconds)
            ctx.computed(model, batch[0].request.steps, len(jobs), seconds)
            metrics.batch_size.labels(model).observe(len(jobs))
            metrics.batch_compute.labels(model).observe(seconds)
            metrics.images.labels(model).inc(len(jobs))
            done = time.monotonic()
            offset = 0
            for t in batch:
                t.succeed(images[offset : offset + t.images], seconds, done, len(jobs))
                offset += t.images
        finally:
            self._busy = False
            self._running = []
            ctx.queue.wake()
