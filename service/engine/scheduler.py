"""The scheduler interface: what the engine needs from request-level and step-level scheduling alike.

The engine admits requests into its `RequestQueue` and answers callers; a scheduler takes tickets
out of that queue, runs them on the runner thread and settles their futures. Two implement it:

- `service.engine.request_loop.RequestLoop`: request-level batching, a batch of whole requests
  (one model and step count, chosen by `service.engine.policy`) runs through all its steps;
- `service.engine.step_loop.StepLoop`: step-level batching, images join and leave the running
  batch between sampler steps.

A scheduler gets a `SchedulerContext` (the queue, pipelines, runner, metrics and the batch-cost
estimate it keeps up to date), never the engine itself, so neither imports the other. It reports
every batch or iteration it computed through `SchedulerContext.computed` (the latency controller's
cost model learns from it), and says what work is ahead of a new request through `backlog` (what
the controller predicts completion times from).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service.engine.profile import BatchLimits
from service.engine.queue import RequestQueue, Ticket
from service.engine.runner import Runner
from service.engine.slo import Backlog
from service.metrics import Metrics
from service.pipeline import Pipeline


class BatchCost:
    """Seconds a full batch takes, smoothed (EMA, weight 0.2 on the newest): the Retry-After estimate."""

    def __init__(self) -> None:
        self.seconds: float | None = None

    def observe(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else 0.8 * self.seconds + 0.2 * seconds


@dataclass
class SchedulerContext:
    """What a scheduler works with; owned by the engine, shared by reference."""

    pipelines: Mapping[str, Pipeline]
    queue: RequestQueue
    runner: Runner
    metrics: Metrics
    max_batch_images: int  # the configured bound; `Scheduler.use_limits` may set one per model
    cost: BatchCost = field(default_factory=BatchCost)
    # (model, steps, images, seconds) of each batch computed (step level: steps=1, one iteration)
    on_compute: Callable[[str, int, int, float], None] | None = None

    def computed(self, model: str, steps: int, images: int, seconds: float) -> None:
        if self.on_compute is not None:
            self.on_compute(model, steps, images, seconds)


class Scheduler(Protocol):
    """Runs what the engine admitted: one loop task, started by `Engine.start`, cancelled by `Engine.stop`."""

    async def run(self) -> None:
        """Serve the queue until cancelled (cancelling also abandons a batch in flight)."""
        ...

    @property
    def busy(self) -> bool:
        """Work is in progress outside the queue (for `Engine.idle` and the drain)."""
        ...

    @property
    def running(self) -> Sequence[Ticket]:
        """Tickets computing now (the engine fails them if it stops before they finish)."""
        ...

    def use_limits(self, limits: Mapping[str, BatchLimits]) -> None:
        """Batch bounds per model (from the warm-up cost profile), replacing the configured ones."""
        ...

    def backlog(self, now: float) -> Backlog:
        """The work ahead of a request admitted at `now` (monotonic seconds), queue included."""
        ...


class LoopState:
    """The `busy` and `running` halves of `Scheduler`, as both loops keep them: set by the loop
    around each unit of work (a batch, an iteration), read by the engine."""

    def __init__(self) -> None:
        self._busy = False
        self._running: list[Ticket] = []

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def running(self) -> Sequence[Ticket]:
        return list(self._running)
