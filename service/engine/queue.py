"""The engine's queue: admitted requests waiting for the scheduler, in arrival order.

One object owns the list and the wake-up that tells the scheduler something changed, so the
engine (admission, callers leaving, stop) and the scheduler (dispatch, step-level admission)
change it through the same few methods, and the queue gauges follow every change.

A `Ticket` is a queued request as the batching policy sees it (`key`, `images`, `enqueued_at`)
plus its caller's future and the jobs it runs; it answers its caller through `succeed`/`fail`,
which do nothing once the caller has left (its future is done or cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from service.engine.types import GenerateResult, ResolvedRequest, Routing
from service.pipeline import ImageJob


@dataclass(eq=False)
class Ticket:
    """An admitted request: the policy's view (key, images, enqueued_at), its deadline, future and jobs."""

    request: ResolvedRequest
    key: Hashable
    images: int
    enqueued_at: float
    deadline: float
    future: asyncio.Future[GenerateResult]
    jobs: list[ImageJob]
    started_at: float | None = None
    routing: Routing | None = None  # asked, served and why (`service.engine.router`)

    @property
    def model(self) -> str:
        return self.request.model

    def succeed(self, images: np.ndarray, compute_s: float, done: float, batch_images: int) -> None:
        """Answer the caller (unless it left) with its images; `done` is the monotonic finish time."""
        if self.future.done():
            return
        started = self.started_at or done
        req = self.request
        self.future.set_result(
            GenerateResult(
                model=req.model,
                steps=req.steps,
                guidance=req.guidance,
                images=images,
                seeds=req.seeds,
                queue_s=started - self.enqueued_at,
                compute_s=compute_s,
                total_s=done - self.enqueued_at,
                batch_images=batch_images,
                routing=self.routing,
            )
        )

    def fail(self, error: Exception) -> None:
        """Fail the caller's wait with `error` (unless it already left or was answered)."""
        if not self.future.done():
            self.future.set_exception(error)


class RequestQueue:
    """Tickets in arrival order, the count of images they hold, and the scheduler's wake-up.

    Not thread-safe: only the event loop touches it. `on_change` runs after every change (the
    engine updates its queue gauges there).
    """

    def __init__(self, on_change: Callable[[RequestQueue], None] | None = None) -> None:
        self._tickets: list[Ticket] = []
        self._wake = asyncio.Event()
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._tickets)

    def __iter__(self) -> Iterator[Ticket]:
        return iter(list(self._tickets))

    def __contains__(self, ticket: object) -> bool:
        return ticket in self._tickets

    @property
    def images(self) -> int:
        """Images waiting (the quantity `queue_limit_images` bounds)."""
        return sum(t.images for t in self._tickets)

    def snapshot(self) -> Sequence[Ticket]:
        """The tickets now, oldest first (a copy: the policies read it while the queue changes)."""
        return list(self._tickets)

    def push(self, ticket: Ticket) -> None:
        """Queue an admitted ticket at the back and wake the scheduler."""
        self._tickets.append(ticket)
        self._changed()

    def remove(self, *tickets: Ticket) -> int:
        """Take these tickets out (dispatched, admitted in full, or their caller left); how many were queued."""
        removed = 0
        for ticket in tickets:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
                removed += 1
        if removed:
            self._changed()
        return removed

    def clear(self) -> list[Ticket]:
        """Empty the queue (the engine stops); the tickets that were in it."""
        tickets, self._tickets = self._tickets, []
        self._changed()
        return tickets

    # --- the scheduler's wake-up -------------------------------------------------------------

    def wake(self) -> None:
        """Tell the scheduler to look again (the queue changed, or its runner became free)."""
        self._wake.set()

    def arm(self) -> None:
        """Forget earlier wake-ups: call before looking at the queue, then `wait` if nothing is to do."""
        self._wake.clear()

    async def wait(self, timeout_s: float | None = None) -> None:
        """Until `wake` (or the timeout), whichever is first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self)
        self._wake.set()
