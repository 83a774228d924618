"""The controller's glue: quality per prompt class from the evaluation rows, the options a request
may move to, and the request it is moved as."""

from __future__ import annotations

import pytest

from service.engine.profile import CostProfile
from service.engine.quality import prompt_class, quality_intervals, quality_rows
from service.engine.router import Router
from service.engine.slo import Backlog, Option, SloConfig, Work
from service.engine.types import GenerateRequest, ResolvedRequest
from service.errors import InvalidArgument
from service.fakes import evaluation_row, fake_pipeline

ONE = "a large red circle at the top left on a white background"
TWO = "a green cross on the left and a pink circle on the right"


def family():
    """An 8- and a 4-step student (guidance 1 to 5) and a teacher at 8 and 16 steps (a row at 16 only)."""
    k8 = fake_pipeline("k8", steps=(8,), network_input=True, evaluation={"r": evaluation_row(8, 0.954, 0.642)})
    k4 = fake_pipeline("k4", steps=(4,), network_input=True, evaluation={"r": evaluation_row(4, 0.929, 0.511)})
    for student in (k8, k4):
        m = student.manifest
        student.manifest = m.model_copy(update={"guidance": m.guidance.model_copy(update={"max": 5.0})})
    teacher = fake_pipeline(
        "teacher", steps=(8, 16), default_steps=16, evaluation={"r": evaluation_row(16, 0.943, 0.684)}
    )
    return {p.name: p for p in (k8, k4, teacher)}


def resolved(model: str, steps: int, prompt: str = TWO, guidance: float = 3.0, negative: str = "") -> ResolvedRequest:
    return ResolvedRequest(model, prompt, 0, 1, steps, guidance, negative)


def test_prompt_classes():
    assert prompt_class(ONE) == "one_object"
    assert prompt_class(TWO) == "two_objects"
    assert prompt_class("hello world") == "overall"


def test_rows_are_read_per_step_count_at_the_default_guidance():
    rows = {
        "a": evaluation_row(8, 0.5, 0.4, guidance=1.0),
        "b": {**evaluation_row(8, 0.9, 0.6), "adherence_ci": {"one_object": [0.88, 0.92]}},
        "c": evaluation_row(4, 0.8, 0.5),  # a step count the bundle does not serve
        "d": {"steps": 8},  # no adherence: not a row the controller reads
    }
    p = fake_pipeline("m", steps=(8,), evaluation=rows)
    assert quality_rows(p.manifest) == {8: {"one_object": 0.9, "two_objects": 0.6, "overall": pytest.approx(0.75)}}
    assert quality_intervals(p.manifest) == {8: {"one_object": (0.88, 0.92)}}


def test_the_family_is_the_evaluated_options_and_a_request_moves_only_where_it_can_run():
    router = Router(family(), SloConfig(objective_s=1.0))
    assert set(router.quality) == {Option("k8", 8), Option("k4", 4), Option("teacher", 16)}  # teacher@8: no row
    asked = GenerateRequest("teacher", TWO, 0)
    assert set(router.alternatives(asked, resolved("teacher", 16))) == {Option("k8", 8), Option("k4", 4)}
    # guidance 7 is outside the students' range, a negative prompt is for teachers only: nowhere to go
    high = GenerateRequest("teacher", TWO, 0, guidance=7.0)
    assert router.alternatives(high, resolved("teacher", 16, guidance=7.0)) == []
    negative = GenerateRequest("teacher", TWO, 0, negative_prompt="blue")
    assert router.alternatives(negative, resolved("teacher", 16, negative="blue")) == []


def test_a_moved_request_keeps_its_prompt_seeds_and_explicit_guidance():
    fam = family()
    router = Router(fam, SloConfig(objective_s=1.0))
    fam["teacher"].manifest = fam["teacher"].manifest.model_copy(
        update={"guidance": fam["teacher"].manifest.guidance.model_copy(update={"default": 4.0})}
    )
    r = resolved("teacher", 16, guidance=4.0)
    moved = router.served_request(GenerateRequest("teacher", TWO, 0), r, Option("k4", 4))
    assert (moved.model, moved.steps, moved.guidance, moved.prompt, moved.seeds) == ("k4", 4, 3.0, TWO, [0])
    explicit = router.served_request(GenerateRequest("teacher", TWO, 0, guidance=2.0), r, Option("k4", 4))
    assert explicit.guidance == 2.0


def test_routing_without_profiles_serves_as_asked_and_fast_still_finds_the_cheapest():
    router = Router(family(), SloConfig(objective_s=1.0))
    r = router.route(GenerateRequest("teacher", TWO, 0), resolved("teacher", 16), Backlog(), 0.0)
    assert (r.served, r.reason, r.predicted_s) == (Option("teacher", 16), "as_asked", None)
    r = router.route(GenerateRequest("teacher", TWO, 0, quality="fast"), resolved("teacher", 16), Backlog(), 0.0)
    assert (r.served, r.reason) == (Option("k4", 4), "fast")  # by network evaluations per image


def test_routing_with_profiles_moves_a_late_request_and_says_why():
    router = Router(family(), SloConfig(objective_s=1.0, headroom=0.78))  # predictions must stay within 0.78 s
    for name, steps in (("k8", 8), ("k4", 4)):
        router.use_profile(CostProfile(name, steps, {1: steps * 0.01, 2: steps * 0.02}), max_batch_images=1)
    ahead = Backlog(queued=tuple(Work("k8", 8, 1) for _ in range(9)))  # 0.72 s of k8 work queued
    r = router.route(GenerateRequest("k8", TWO, 0), resolved("k8", 8), ahead, 0.0)  # k8: 0.80 s, k4: 0.76 s
    assert (r.asked, r.served, r.reason, r.prompt_class) == (Option("k8", 8), Option("k4", 4), "slo", "two_objects")
    assert r.predicted_s == pytest.approx(0.76) and r.objective_s == 1.0 and r.downgraded
    best = router.route(GenerateRequest("k8", TWO, 0, quality="best"), resolved("k8", 8), ahead, 0.0)
    assert (best.served, best.reason, best.predicted_s) == (Option("k8", 8), "as_asked", pytest.approx(0.8))


def test_an_unknown_hint_names_the_field():
    router = Router(family(), SloConfig())
    with pytest.raises(InvalidArgument) as e:
        router.hint(GenerateRequest("k8", TWO, 0, quality="great"))
    assert e.value.field == "quality"
