"""The runner (service.engine.runner): every backend call on one dedicated thread, off the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.engine.runner import Runner
from service.fakes import FakeDenoiser, fake_pipeline
from service.pipeline import ImageJob


class ThreadRecordingDenoiser(FakeDenoiser):
    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()

    def __call__(self, z, t, states, mask, w=None):
        self.threads.add(threading.current_thread().name)
        return super().__call__(z, t, states, mask, w)


def test_batches_run_on_one_runner_thread_and_match_a_direct_call():
    den = ThreadRecordingDenoiser()
    pipeline = fake_pipeline("fake", den)
    jobs = [ImageJob("a red circle", seed, 4, 3.0) for seed in (1, 2)]
    runner = Runner()

    async def main():
        loop_thread = threading.current_thread().name
        results = await asyncio.gather(*(runner.run(pipeline, jobs) for _ in range(3)))
        same = await runner.call(threading.current_thread)
        return loop_thread, results, same.name

    try:
        loop_thread, results, called_on = asyncio.run(main())
    finally:
        runner.close()
    assert len(den.threads) == 1 and loop_thread not in den.threads
    assert den.threads == {called_on}
    for images, seconds in results:
        np.testing.assert_array_equal(images, fake_pipeline("fake").generate(jobs))
        assert seconds > 0


def test_warm_up_runs_one_image_per_model_and_step_count():
    dens = [FakeDenoiser(), FakeDenoiser()]
    pipelines = [fake_pipeline("a", dens[0], steps=(2, 4)), fake_pipeline("b", dens[1], steps=(1, 2, 8))]
    runner = Runner()
    try:
        asyncio.run(runner.warm(pipelines))
    finally:
        runner.close()
    # a teacher's guidance doubles the batch: one image is batches of 2, `steps` calls each
    assert dens[0].batch_sizes == [2] * (2 + 4)
    assert dens[1].batch_sizes == [2] * (1 + 2 + 8)


def test_after_close_no_more_work_is_taken():
    runner = Runner()
    runner.close()

    async def main():
        await runner.call(int)

    with pytest.raises(RuntimeError):
        asyncio.run(main())
