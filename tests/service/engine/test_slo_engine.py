"""The latency controller inside the engine, both schedulers: a burst makes the server move requests
to the cheaper model and it recovers once the burst is served; `best` never moves; every move is
in the result and in the metrics; with `shed`, what is predicted late is refused."""

from __future__ import annotations

import asyncio
import collections

import pytest

from service.engine import Engine, EngineConfig, GenerateRequest, OverObjective
from service.engine.slo import Option, SloConfig
from service.fakes import FakeDenoiser, evaluation_row, fake_pipeline

ONE = "a large red circle at the top left on a white background"
TWO = "a green cross on the left and a pink circle on the right"
K8, K4 = Option("k8", 8), Option("k4", 4)


@pytest.fixture(params=["request", "step"])
def scheduling(request) -> str:
    return request.param


def family(per_image_s: float = 0.004):
    """An 8- and a 4-step student of one teacher, with the shipped students' rows (rounded)."""
    rows8, rows4 = {"r": evaluation_row(8, 0.954, 0.642)}, {"r": evaluation_row(4, 0.929, 0.511)}
    k8 = fake_pipeline("k8", FakeDenoiser(per_image_s=per_image_s), steps=(8,), network_input=True, evaluation=rows8)
    k4 = fake_pipeline("k4", FakeDenoiser(per_image_s=per_image_s), steps=(4,), network_input=True, evaluation=rows4)
    return [k8, k4]


async def started(scheduling: str, slo: SloConfig, **config) -> Engine:
    config = {"max_batch_images": 2, "max_wait_s": 0.0, "profile_budget_s": 0.3, "scheduling": scheduling, **config}
    engine = Engine(family(), EngineConfig(slo=slo, **config))
    await engine.start()
    await engine.warm_up()
    return engine


def counter(engine: Engine, name: str, **labels: str) -> float:
    total = 0.0
    for family_ in engine.metrics.registry.collect():
        for s in family_.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def moved(engine: Engine) -> float:
    """Downgrades the metrics counted: routing decisions of any reason but as_asked."""
    return counter(engine, "fewstep_routing_total") - counter(engine, "fewstep_routing_total", reason="as_asked")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_burst_moves_requests_to_the_cheaper_model_and_the_server_recovers(scheduling: str):
    slo = SloConfig(objective_s=0.25, recovery_half_life_s=0.05)  # target 0.2 s; an 8-step image costs ~32 ms

    async def scenario():
        engine = await started(scheduling, slo)
        idle = await engine.generate(GenerateRequest("k8", TWO, seed=0))
        burst = [GenerateRequest("k8", ONE if i % 2 else TWO, seed=i) for i in range(16)]
        during = await asyncio.gather(*(engine.generate(r) for r in burst))
        await asyncio.sleep(0.5)  # the burst is served; the pressure decays (half-life 0.05 s)
        after = [await engine.generate(GenerateRequest("k8", p, seed=100 + i)) for i, p in enumerate((ONE, TWO))]
        await engine.stop()
        return engine, idle, during, after

    engine, idle, during, after = run(scenario())
    assert idle.routing is not None and (idle.model, idle.routing.reason) == ("k8", "as_asked")
    assert idle.routing.predicted_s is not None and idle.routing.objective_s == 0.25
    reasons = collections.Counter(r.routing.reason for r in during)
    served = collections.Counter((r.model, r.routing.prompt_class) for r in during)
    assert served[("k4", "one_object")] + served[("k4", "two_objects")] >= 4, (reasons, served)
    # the cheapest quality first: at least as many one-object prompts moved as two-object ones
    assert served[("k4", "one_object")] >= served[("k4", "two_objects")], served
    for r in during:
        assert r.routing.asked == K8 and (r.model, r.steps) == (r.routing.served.model, r.routing.served.steps)
        assert (r.routing.reason == "as_asked") == (r.model == "k8")
    assert [(r.model, r.routing.reason) for r in after] == [("k8", "as_asked")] * 2  # recovered
    assert moved(engine) == sum(r.routing.downgraded for r in during)
    assert counter(engine, "fewstep_slo_requests_total") == 1 + 16 + 2
    assert counter(engine, "fewstep_slo_violations_total") == sum(r.total_s > 0.25 for r in [idle, *during, *after])
    assert counter(engine, "fewstep_slo_predicted_seconds_count") == 1 + 16 + 2


def test_best_is_never_moved_however_late_it_is_predicted(scheduling: str):
    async def scenario():
        engine = await started(scheduling, SloConfig(objective_s=0.1))
        results = await asyncio.gather(
            *(engine.generate(GenerateRequest("k8", ONE, seed=i, quality="best")) for i in range(12))
        )
        await engine.stop()
        return engine, results

    engine, results = run(scenario())
    assert {(r.model, r.routing.reason, r.routing.hint) for r in results} == {("k8", "as_asked", "best")}
    assert any(r.routing.predicted_s > 0.1 for r in results) and moved(engine) == 0


def test_fast_takes_the_cheapest_and_no_objective_changes_nothing_else(scheduling: str):
    async def scenario():
        engine = await started(scheduling, SloConfig())
        plain = await engine.generate(GenerateRequest("k8", TWO, seed=1))
        fast = await engine.generate(GenerateRequest("k8", TWO, seed=1, quality="fast"))
        await engine.stop()
        return engine, plain, fast

    engine, plain, fast = run(scenario())
    assert (plain.model, plain.routing.hint, plain.routing.reason, plain.routing.predicted_s) == (
        "k8", "best", "as_asked", None
    )  # fmt: skip
    assert (fast.model, fast.steps, fast.routing.reason) == ("k4", 4, "fast")
    assert counter(engine, "fewstep_routing_total", reason="fast", asked="k8", model="k4", steps="4") == 1
    assert counter(engine, "fewstep_slo_requests_total") == 0  # nothing is held to an objective


def test_shed_refuses_what_even_the_fastest_option_would_finish_late():
    async def scenario():
        engine = await started("request", SloConfig(objective_s=0.05, shed=True), max_batch_images=1)
        outcomes = await asyncio.gather(
            *(engine.generate(GenerateRequest("k8", TWO, seed=i)) for i in range(10)), return_exceptions=True
        )
        await engine.stop()
        return engine, outcomes

    engine, outcomes = run(scenario())
    refused = [o for o in outcomes if isinstance(o, OverObjective)]
    assert refused and all(o.retry_after_s >= 1 and o.reason == "over_objective" for o in refused)
    assert counter(engine, "fewstep_requests_rejected_total", reason="over_objective") == len(refused)
    assert any(not isinstance(o, Exception) for o in outcomes)


def test_the_controller_learns_the_cost_profile_at_warm_up_even_with_fixed_bounds():
    async def scenario():
        engine = await started("request", SloConfig(objective_s=1.0), max_batch_images=2)
        await engine.stop()
        return engine

    engine = run(scenario())
    assert set(engine.cost_profiles) == {"k8", "k4"}
    assert engine.max_batch_images("k8") == 2  # the configured bound is kept
    assert engine.router.costs.unit_seconds("k4", 4) < engine.router.costs.unit_seconds("k8", 8)
