"""The engine's request and result types (service.engine.types): seeds and per-image jobs."""

from __future__ import annotations

from service.engine.types import GenerateRequest, ResolvedRequest
from service.pipeline import ImageJob


def test_image_j_of_a_request_uses_seed_plus_j():
    assert GenerateRequest(model="m", prompt="p", seed=7, n=3).seeds == [7, 8, 9]
    assert GenerateRequest(model="m", prompt="p", seed=7).seeds == [7]


def test_a_resolved_request_is_one_job_per_image_with_every_setting():
    r = ResolvedRequest(model="m", prompt="a red circle", seed=40, n=2, steps=8, guidance=2.5, negative_prompt="blue")
    assert r.seeds == [40, 41]
    assert r.jobs() == [ImageJob("a red circle", 40, 8, 2.5, "blue"), ImageJob("a red circle", 41, 8, 2.5, "blue")]
