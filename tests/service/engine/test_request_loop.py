"""`RequestLoop` alone, over a scheduler context (no engine): it runs the policy's batches on the runner,
answers each ticket with its own slice, fails only a failing batch, and takes per-model limits."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest

from service.engine.policy import Decision, DynamicBatchPolicy
from service.engine.profile import BatchLimits
from service.engine.request_loop import RequestLoop
from service.errors import BatchFailed
from service.fakes import fake_pipeline
from tests.service.engine.conftest import GatedDenoiser, context, ticket, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def serve(loop: RequestLoop, tickets) -> list:
    """Queue `tickets`, run the loop until all are settled, stop it; their outcomes."""
    for t in tickets:
        loop.ctx.queue.push(t)
    task = asyncio.create_task(loop.run())
    try:
        return await asyncio.gather(*(t.future for t in tickets), return_exceptions=True)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.ctx.runner.close()


def test_a_batch_answers_each_ticket_with_its_own_images():
    async def scenario():
        ctx = context()
        loop = RequestLoop(ctx, DynamicBatchPolicy(8, 0.0))
        tickets = [ticket("fake", 2, seed=1), ticket("fake", 1, seed=7), ticket("other", 1, seed=1)]
        return ctx, await serve(loop, tickets), loop

    ctx, results, loop = run(scenario())
    assert [r.batch_images for r in results] == [3, 3, 1]
    assert results[0].images.shape == (2, 8, 8, 3) and results[1].seeds == [7]
    np.testing.assert_array_equal(results[0].images[0], results[2].images[0])  # same seed and prompt, any batch
    assert ctx.cost.seconds is not None and not loop.busy and loop.running == []
    assert len(ctx.queue) == 0


def test_a_backend_error_fails_its_batch_only():
    async def scenario():
        gated = GatedDenoiser()
        gated.fail = True
        ctx = context(fake_pipeline("fake", gated), fake_pipeline("other"))
        loop = RequestLoop(ctx, DynamicBatchPolicy(8, 0.0))
        return ctx, await serve(loop, [ticket("fake", 2), ticket("other", 1)])

    ctx, (failed, fine) = run(scenario())
    assert isinstance(failed, BatchFailed) and "boom" in str(failed)
    assert fine.images.shape[0] == 1
    assert ctx.metrics.registry.get_sample_value("fewstep_batch_failures_total", {"model": "fake"}) == 1


def test_busy_and_running_while_a_batch_computes_and_cancel_abandons_it():
    async def scenario():
        gated = GatedDenoiser()
        gated.gate.clear()
        ctx = context(fake_pipeline("fake", gated))
        loop = RequestLoop(ctx, DynamicBatchPolicy(8, 0.0))
        t = ticket("fake")
        ctx.queue.push(t)
        task = asyncio.create_task(loop.run())
        await wait_until(gated.entered.is_set)
        state = (loop.busy, list(loop.running), len(ctx.queue))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gated.gate.set()
        ctx.runner.close()
        return t, state

    t, (busy, running, queued) = run(scenario())
    assert busy and running == [t] and queued == 0


def test_limits_become_per_key_bounds_of_the_dynamic_policy_and_a_custom_policy_is_kept():
    ctx = context(fake_pipeline("fake", steps=(4, 8)), fake_pipeline("other"))
    loop = RequestLoop(ctx, DynamicBatchPolicy(8, 0.5))
    loop.use_limits({"fake": BatchLimits(2, 0.0)})
    assert isinstance(loop.policy, DynamicBatchPolicy)
    assert loop.policy.bounds(("fake", 4)) == (2, 0.0) == loop.policy.bounds(("fake", 8))
    assert loop.policy.bounds(("other", 4)) == (8, 0.5)

    class Never:
        def select(self, queue, now):
            return Decision()

    custom = Never()
    loop = RequestLoop(ctx, custom)
    loop.use_limits({"fake": BatchLimits(2, 0.0)})
    assert loop.policy is custom
    ctx.runner.close()


@pytest.mark.parametrize("max_wait_s", [0.0, 0.1])
def test_the_loop_waits_for_the_policys_wake_time(max_wait_s):
    async def scenario():
        ctx = context()
        loop = RequestLoop(ctx, DynamicBatchPolicy(8, max_wait_s))
        t = ticket("fake", at=asyncio.get_running_loop().time())
        (result,) = await serve(loop, [t])
        return result

    result = run(scenario())
    assert result.queue_s >= max_wait_s * 0.9
