"""The engine's queue: arrival order, the image count the queue bound reads, change hooks and wake-ups,
and tickets answering (or not, once their caller left)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.engine.queue import RequestQueue
from service.errors import BatchFailed
from tests.service.engine.conftest import ticket


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_tickets_keep_arrival_order_and_count_images():
    async def scenario():
        seen: list[tuple[int, int]] = []
        q = RequestQueue(on_change=lambda q: seen.append((len(q), q.images)))
        a, b, c = ticket("m", 2), ticket("m", 3), ticket("o", 1)
        for t in (a, b, c):
            q.push(t)
        assert list(q) == [a, b, c] and q.snapshot() == [a, b, c] and q.images == 6
        assert q.remove(b, ticket("m")) == 1 and b not in q and list(q) == [a, c]
        assert q.remove(b) == 0  # not queued: no change, no hook
        left = q.clear()
        return seen, left, q

    seen, left, q = run(scenario())
    assert seen == [(1, 2), (2, 5), (3, 6), (2, 3), (0, 0)]
    assert len(left) == 2 and len(q) == 0 and not q


def test_a_change_or_a_wake_ends_the_schedulers_wait_and_arm_forgets_old_ones():
    async def scenario():
        q = RequestQueue()
        q.push(ticket("m"))
        q.arm()  # the push's wake-up is forgotten: the scheduler has looked at the queue since
        start = asyncio.get_running_loop().time()
        await q.wait(0.05)
        waited = asyncio.get_running_loop().time() - start
        waiter = asyncio.create_task(q.wait())
        await asyncio.sleep(0)
        q.wake()
        await asyncio.wait_for(waiter, 1)
        q.arm()
        waiter = asyncio.create_task(q.wait())
        await asyncio.sleep(0)
        q.push(ticket("m"))
        await asyncio.wait_for(waiter, 1)
        return waited

    assert run(scenario()) >= 0.04


def test_a_ticket_answers_its_caller_once_and_never_after_it_left():
    async def scenario():
        t = ticket("m", n=2, steps=8, guidance=2.5, at=10.0)
        t.started_at = 11.0
        t.succeed(np.zeros((2, 8, 8, 3), np.uint8), compute_s=0.5, done=12.0, batch_images=6)
        t.fail(BatchFailed("too late"))  # already answered: ignored
        result = t.future.result()
        gone = ticket("m")
        gone.future.cancel()
        gone.succeed(np.zeros((1, 8, 8, 3), np.uint8), 0.1, 1.0, 1)  # the caller left: nothing to do
        failed = ticket("m")
        failed.fail(BatchFailed("boom"))
        with pytest.raises(BatchFailed):
            failed.future.result()
        return result

    r = run(scenario())
    assert (r.steps, r.guidance, r.seeds, r.batch_images) == (8, 2.5, [0, 1], 6)
    assert (r.queue_s, r.compute_s, r.total_s) == (1.0, 0.5, 2.0)
