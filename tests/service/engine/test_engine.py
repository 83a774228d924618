"""The engine with a fake backend: batch formation, max wait, bounds, cancellation, deadline,
error isolation, drain and the determinism that makes batching invisible to clients."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.engine import (
    BatchFailed,
    DeadlineExceeded,
    Engine,
    ErrorKind,
    GenerateRequest,
    InvalidArgument,
    NotReady,
    QueueFull,
    UnknownModel,
)
from tests.service.engine.conftest import GatedDenoiser, hold_runner, started_engine, wait_until


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def sample(engine: Engine, name: str, **labels: str) -> float:
    return engine.metrics.registry.get_sample_value(name, labels) or 0.0


def test_requests_queued_behind_a_running_batch_leave_together_with_mixed_prompts_seeds_guidance_and_n():
    # max_wait 0: batches form from what queued while the runner was busy, not from waiting.
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_batch_images=8, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        reqs = [
            GenerateRequest("fake", "a red circle", seed=1, n=1, guidance=2.0),
            GenerateRequest("fake", "a blue square", seed=7, n=3, guidance=5.0),
            GenerateRequest("fake", "two triangles", seed=9, n=2),
        ]
        tasks = [asyncio.create_task(engine.generate(r)) for r in reqs]
        await wait_until(lambda: len(engine.queue) == 3)
        gated.gate.set()
        await holder
        results = await asyncio.gather(*tasks)
        await engine.stop()
        return engine, results

    engine, results = run(scenario())
    assert [r.batch_images for r in results] == [6, 6, 6]
    assert [r.images.shape[0] for r in results] == [1, 3, 2]
    assert results[1].seeds == [7, 8, 9]
    assert results[0].guidance == 2.0 and results[2].guidance == 3.0  # the model's default
    assert sample(engine, "fewstep_batch_size_images_count", model="fake") == 1 + 1  # holder + the batch of 6
    assert sample(engine, "fewstep_images_generated_total", model="fake") == 7


def test_different_step_counts_and_models_never_share_a_batch():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_batch_images=8, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        reqs = [
            GenerateRequest("fake", "p", seed=1, steps=4),
            GenerateRequest("fake", "p", seed=2, steps=8),
            GenerateRequest("other", "p", seed=3, steps=4),
            GenerateRequest("fake", "p", seed=4, steps=4),
        ]
        tasks = [asyncio.create_task(engine.generate(r)) for r in reqs]
        await wait_until(lambda: len(engine.queue) == 4)
        gated.gate.set()
        await holder
        results = await asyncio.gather(*tasks)
        await engine.stop()
        return results

    results = run(scenario())
    assert [r.batch_images for r in results] == [2, 1, 1, 2]
    assert [r.steps for r in results] == [4, 8, 4, 4]


def test_a_lone_request_waits_about_max_wait_for_company():
    async def scenario():
        engine = await started_engine(max_batch_images=8, max_wait_s=0.2)
        result = await engine.generate(GenerateRequest("fake", "alone", seed=3))
        await engine.stop()
        return result

    result = run(scenario())
    assert 0.18 <= result.queue_s < 1.0
    assert result.batch_images == 1


def test_a_full_batch_does_not_wait():
    async def scenario():
        engine = await started_engine(max_batch_images=4, max_wait_s=5.0)
        result = await engine.generate(GenerateRequest("fake", "many", seed=3, n=4))
        await engine.stop()
        return result

    assert run(scenario()).queue_s < 1.0


def test_a_full_queue_refuses_with_a_retry_hint_and_counts_it():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, queue_limit_images=4, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        queued = asyncio.create_task(engine.generate(GenerateRequest("fake", "fits", seed=0, n=4)))
        await wait_until(lambda: len(engine.queue) == 1)
        with pytest.raises(QueueFull) as refused:
            await engine.generate(GenerateRequest("fake", "overflows", seed=0, n=1))
        gated.gate.set()
        await asyncio.gather(holder, queued)
        await engine.stop()
        return engine, refused.value

    engine, refused = run(scenario())
    assert refused.retry_after_s >= 1 and refused.kind is ErrorKind.OVERLOADED
    assert sample(engine, "fewstep_requests_rejected_total", reason="queue_full") == 1


def test_a_request_past_its_deadline_fails_and_leaves_the_queue():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, request_timeout_s=0.3)
        holder = await hold_runner(engine, gated)
        with pytest.raises(DeadlineExceeded, match="still queued"):
            await engine.generate(GenerateRequest("fake", "late", seed=0))
        depth = len(engine.queue)
        gated.gate.set()
        with pytest.raises(DeadlineExceeded, match="computing"):  # the holder ran past 0.3 s too
            await holder
        await engine.stop()
        return engine, depth

    engine, depth = run(scenario())
    assert depth == 0
    assert sample(engine, "fewstep_requests_rejected_total", reason="deadline") == 2


def test_a_caller_that_leaves_before_its_batch_starts_is_dropped():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        leaving = asyncio.create_task(engine.generate(GenerateRequest("fake", "gone", seed=0, n=3)))
        staying = asyncio.create_task(engine.generate(GenerateRequest("fake", "here", seed=0, n=1)))
        await wait_until(lambda: len(engine.queue) == 2)
        leaving.cancel()
        await wait_until(lambda: len(engine.queue) == 1)
        gated.gate.set()
        await holder
        result = await staying
        await engine.stop()
        return engine, result, leaving

    engine, result, leaving = run(scenario())
    assert leaving.cancelled()
    assert result.batch_images == 1  # the 3 images of the departed request were never computed
    assert sample(engine, "fewstep_requests_rejected_total", reason="disconnected") == 1


def test_a_backend_error_fails_only_its_batch_and_the_engine_stays_ready():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated)
        gated.fail = True
        with pytest.raises(BatchFailed, match="RuntimeError: boom"):
            await engine.generate(GenerateRequest("fake", "unlucky", seed=0))
        after = await engine.generate(GenerateRequest("fake", "fine", seed=0))
        await engine.stop()
        return engine, after

    engine, after = run(scenario())
    assert after.images.shape[0] == 1
    assert sample(engine, "fewstep_batch_failures_total", model="fake") == 1
    assert sample(engine, "fewstep_requests_rejected_total", reason="backend_error") == 1


def test_drain_closes_admission_and_finishes_what_was_accepted():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        accepted = [asyncio.create_task(engine.generate(GenerateRequest("fake", f"p{i}", seed=i))) for i in range(3)]
        await wait_until(lambda: len(engine.queue) == 3)
        engine.begin_drain()
        with pytest.raises(NotReady) as refused:
            await engine.generate(GenerateRequest("fake", "too late", seed=0))
        gated.gate.set()
        drained = await engine.drain(timeout_s=5.0)
        results = await asyncio.gather(holder, *accepted)
        await engine.stop()
        return engine, refused.value, drained, results

    engine, refused, drained, results = run(scenario())
    assert refused.kind is ErrorKind.UNAVAILABLE and refused.reason == "draining"
    assert drained and len(results) == 4 and not engine.ready
    assert sample(engine, "fewstep_requests_rejected_total", reason="draining") == 1


def test_stop_fails_whatever_a_timed_out_drain_left_queued():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_wait_s=0.0)
        holder = await hold_runner(engine, gated)
        queued = asyncio.create_task(engine.generate(GenerateRequest("fake", "stuck", seed=0)))
        await wait_until(lambda: len(engine.queue) == 1)
        await engine.stop(timeout_s=0.05)
        gated.gate.set()
        outcomes = await asyncio.gather(queued, holder, return_exceptions=True)
        return outcomes

    queued_outcome, _ = run(scenario())
    assert isinstance(queued_outcome, NotReady)


def test_an_image_is_identical_alone_and_inside_a_mixed_batch():
    async def scenario():
        gated = GatedDenoiser()
        engine = await started_engine(gated, max_wait_s=0.0)
        alone = await engine.generate(GenerateRequest("fake", "the same prompt", seed=42, n=2, guidance=4.0))
        holder = await hold_runner(engine, gated)
        tasks = [
            asyncio.create_task(engine.generate(GenerateRequest("fake", "noise before", seed=1, n=3, guidance=1.0))),
            asyncio.create_task(
                engine.generate(GenerateRequest("fake", "the same prompt", seed=42, n=2, guidance=4.0))
            ),
            asyncio.create_task(engine.generate(GenerateRequest("fake", "noise after", seed=5, n=1, guidance=7.0))),
        ]
        await wait_until(lambda: len(engine.queue) == 3)
        gated.gate.set()
        await holder
        batched = (await asyncio.gather(*tasks))[1]
        await engine.stop()
        return alone, batched

    alone, batched = run(scenario())
    assert alone.batch_images == 2 and batched.batch_images == 6
    np.testing.assert_array_equal(alone.images, batched.images)


def test_admission_checks_the_model_and_the_job_before_queueing():
    async def scenario():
        engine = await started_engine()
        with pytest.raises(UnknownModel):
            await engine.generate(GenerateRequest("nope", "p", seed=0))
        with pytest.raises(InvalidArgument) as bad_steps:
            await engine.generate(GenerateRequest("fake", "p", seed=0, steps=3))
        with pytest.raises(InvalidArgument) as bad_size:
            await engine.generate(GenerateRequest("fake", "p", seed=0, width=64))
        await engine.stop()
        return engine, bad_steps.value, bad_size.value

    engine, bad_steps, bad_size = run(scenario())
    assert bad_steps.field == "steps" and bad_size.field == "width"
    assert sample(engine, "fewstep_requests_rejected_total", reason="unknown_model") == 1


def test_nothing_is_admitted_before_warm_up():
    async def scenario():
        from service.fakes import fake_pipeline

        engine = Engine([fake_pipeline()])
        await engine.start()
        with pytest.raises(NotReady, match="warming up"):
            await engine.generate(GenerateRequest("fake", "p", seed=0))
        await engine.warm_up()
        result = await engine.generate(GenerateRequest("fake", "p", seed=0))
        await engine.stop()
        return result

    assert run(scenario()).images.shape == (1, 8, 8, 3)


def test_duplicate_model_names_are_refused():
    from service.fakes import fake_pipeline

    with pytest.raises(ValueError, match="named 'x'"):
        Engine([fake_pipeline("x"), fake_pipeline("x")])
