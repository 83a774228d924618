"""Disconnect-aware waiting: a client that goes away cancels its engine call."""

from __future__ import annotations

import asyncio

import pytest

from service.api.deps import CLIENT_CLOSED, until_disconnected
from service.api.errors import ApiError


class FakeRequest:
    def __init__(self, disconnect_after_polls: int) -> None:
        self.polls, self.limit = 0, disconnect_after_polls

    async def is_disconnected(self) -> bool:
        self.polls += 1
        return self.polls >= self.limit


def test_a_disconnect_cancels_the_work_and_answers_499():
    async def scenario():
        cancelled = asyncio.Event()

        async def work():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with pytest.raises(ApiError) as closed:
            await until_disconnected(FakeRequest(2), work())
        return closed.value, cancelled.is_set()

    error, cancelled = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert error.status == CLIENT_CLOSED and cancelled


def test_finished_work_is_returned_while_the_client_stays():
    async def work():
        await asyncio.sleep(0.12)
        return "done"

    assert asyncio.run(until_disconnected(FakeRequest(10**6), work())) == "done"
