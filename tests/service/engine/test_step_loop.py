"""`StepLoop` alone, over a scheduler context (no engine): requests admitted between iterations up to
each model's bound (configured or from `use_limits`), answered as their last image retires, their
slots freed when their caller leaves; byte-identical to request-level sampling."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from service.engine.profile import BatchLimits
from service.engine.step_loop import StepLoop
from service.errors import BatchFailed
from service.fakes import FakeDenoiser, fake_pipeline
from tests.service.engine.conftest import GatedDenoiser, context, ticket, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


@contextlib.asynccontextmanager
async def running(loop: StepLoop):
    task = asyncio.create_task(loop.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.ctx.runner.close()


def test_answers_match_request_level_sampling_byte_for_byte():
    async def scenario():
        ctx = context(fake_pipeline("fake", steps=(4, 8)), fake_pipeline("other", steps=(4, 8)))
        loop = StepLoop(ctx)
        tickets = [ticket("fake", 2, steps=8, seed=1), ticket("fake", 3, steps=4, seed=5, guidance=1.0)]
        tickets.append(ticket("other", 1, steps=4, seed=2))
        async with running(loop):
            for t in tickets:
                ctx.queue.push(t)
            results = await asyncio.gather(*(t.future for t in tickets))
        return ctx, tickets, results

    ctx, tickets, results = run(scenario())
    for t, r in zip(tickets, results, strict=True):
        expected = ctx.pipelines[t.model].generate(t.jobs)
        assert r.images.tobytes() == expected.tobytes() and r.steps == t.request.steps
    assert ctx.cost.seconds is not None and len(ctx.queue) == 0


def test_in_flight_images_stay_within_the_bound_and_limits_replace_it():
    async def scenario(limits):
        den = FakeDenoiser()
        ctx = context(fake_pipeline("s", den, network_input=True), max_batch_images=4)
        loop = StepLoop(ctx)
        if limits:
            loop.use_limits(limits)
        async with running(loop):
            t = ticket("s", 5)
            ctx.queue.push(t)
            await t.future
        return den.batch_sizes, loop

    sizes, loop = run(scenario(None))
    assert max(sizes) == 4 and loop.max_batch_images("s") == 4
    sizes, loop = run(scenario({"s": BatchLimits(2, 0.0)}))
    assert max(sizes) == 2 and loop.max_batch_images("s") == 2


def test_a_caller_that_leaves_frees_its_slots_at_the_next_iteration():
    async def scenario():
        gated = GatedDenoiser()
        ctx = context(fake_pipeline("fake", gated, steps=(4, 8)), max_batch_images=2)
        loop = StepLoop(ctx)
        gated.gate.clear()
        async with running(loop):
            leaving = ticket("fake", 2, steps=8)
            ctx.queue.push(leaving)
            await wait_until(gated.entered.is_set)
            busy, in_flight = loop.busy, list(loop.running)
            waiting = ticket("fake", 1, steps=4)
            ctx.queue.push(waiting)
            leaving.future.cancel()
            gated.gate.set()
            result = await waiting.future
        return busy, in_flight, leaving, result, loop

    busy, in_flight, leaving, result, loop = run(scenario())
    assert busy and in_flight == [leaving]
    assert result.images.shape[0] == 1 and loop.in_flight_images == 0 and not loop.progress


def test_a_failing_iteration_fails_that_models_requests_only():
    async def scenario():
        gated = GatedDenoiser()
        gated.fail = True
        ctx = context(fake_pipeline("fake", gated), fake_pipeline("other"))
        loop = StepLoop(ctx)
        doomed, fine = ticket("fake"), ticket("other")
        async with running(loop):
            ctx.queue.push(doomed)
            ctx.queue.push(fine)
            outcomes = await asyncio.gather(doomed.future, fine.future, return_exceptions=True)
        return outcomes

    failed, ok = run(scenario())
    assert isinstance(failed, BatchFailed) and ok.images.shape[0] == 1
    assert np.isfinite(ok.total_s)


def test_iterations_run_back_to_back_while_the_event_loop_is_busy():
    """The runner does not wait for the event loop between iterations: with the loop held (as by
    HTTP work under load), an 8-step request still runs all its steps; only its answer waits."""

    async def scenario():
        den = FakeDenoiser(delay_s=0.005)
        ctx = context(fake_pipeline("fake", den, steps=(4, 8)))
        loop = StepLoop(ctx)
        async with running(loop):
            t = ticket("fake", 1, steps=8)
            ctx.queue.push(t)
            await wait_until(lambda: len(den.batch_sizes) > 0)
            time.sleep(0.5)  # holds the event loop
            during = len(den.batch_sizes)
            result = await t.future
        return during, result

    during, result = run(scenario())
    assert during == 8 and result.images.shape[0] == 1


def test_a_slot_freed_at_a_boundary_is_filled_there_from_the_standby_images():
    """Admitted images beyond the max batch stand by on the driver's side: when one retires, the
    next takes its slot at that boundary, without waiting for the event loop (held here)."""

    async def scenario():
        den = FakeDenoiser(delay_s=0.005)
        ctx = context(fake_pipeline("fake", den, network_input=True, steps=(4, 8)), max_batch_images=2)
        loop = StepLoop(ctx)
        short, long, standby = ticket("fake", 1, steps=4), ticket("fake", 1, steps=8), ticket("fake", 1, steps=4)
        async with running(loop):
            for t in (short, long, standby):
                ctx.queue.push(t)
            await wait_until(lambda: len(den.batch_sizes) > 0)
            time.sleep(0.5)  # holds the event loop
            during = list(den.batch_sizes)
            results = await asyncio.gather(short.future, long.future, standby.future)
        return during, results, loop

    during, results, loop = run(scenario())
    assert during == [2] * 8  # "standby" joined at step 5, as "short" retired
    assert [r.images.shape[0] for r in results] == [1, 1, 1] and loop.in_flight_images == 0
    assert results[2].queue_s > results[0].queue_s  # its wait ran until it entered the batch
