"""Fakes for engine tests: a denoiser the test can hold (to fill the queue behind a running batch)
and make fail, and a started, warmed engine over it."""

from __future__ import annotations

import asyncio
import threading

from service.engine import Engine, EngineConfig
from service.fakes import FakeDenoiser, fake_pipeline


class GatedDenoiser(FakeDenoiser):
    """FakeDenoiser that blocks while `gate` is clear and raises once when `fail` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, z, t, states, mask, w=None):
        self.entered.set()
        if not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        if self.fail:
            self.fail = False
            raise RuntimeError("boom")
        return super().__call__(z, t, states, mask, w)


async def started_engine(denoiser: FakeDenoiser | None = None, **config) -> Engine:
    engine = Engine([fake_pipeline("fake", denoiser), fake_pipeline("other")], EngineConfig(**config))
    await engine.start()
    await engine.warm_up()
    return engine


async def wait_until(predicate, timeout_s: float = 5.0) -> None:
    """Poll `predicate` from the event loop (the runner thread changes what it reads)."""
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached in time")


async def hold_runner(engine: Engine, denoiser: GatedDenoiser) -> asyncio.Task:
    """Start a one-image request and leave it blocked inside the backend (the runner is busy)."""
    from service.engine import GenerateRequest

    denoiser.gate.clear()
    denoiser.entered.clear()
    task = asyncio.create_task(engine.generate(GenerateRequest("fake", "holder", seed=0)))
    await wait_until(denoiser.entered.is_set)
    return task


def ticket(model: str, n: int = 1, steps: int = 4, seed: int = 0, guidance: float = 3.0, at: float = 0.0):
    """A queued request as the engine admits it (call inside a running event loop: it has a future)."""
    from service.engine.queue import Ticket
    from service.engine.types import ResolvedRequest

    request = ResolvedRequest(model, f"prompt {seed}", seed, n, steps, guidance, "")
    return Ticket(
        request=request,
        key=(model, steps),
        images=n,
        enqueued_at=at,
        deadline=at + 60.0,
        future=asyncio.get_running_loop().create_future(),
        jobs=request.jobs(),
    )


def context(*pipelines, max_batch_images: int = 8):
    """A scheduler's context over `pipelines` (default: two fake models), with its own queue and runner."""
    from service.engine.queue import RequestQueue
    from service.engine.runner import Runner
    from service.engine.scheduler import SchedulerContext
    from service.fakes import fake_pipeline
    from service.metrics import Metrics

    pipes = pipelines or (fake_pipeline("fake"), fake_pipeline("other"))
    metrics = Metrics()
    metrics.add_models(list(pipes))
    return SchedulerContext({p.name: p for p in pipes}, RequestQueue(), Runner(), metrics, max_batch_images)
