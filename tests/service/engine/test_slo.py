"""The latency controller's decision logic alone (`service.engine.slo`): costs, predictions and
choices, with no engine, clock or pipelines; property checks over seeded random situations."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from service.engine.policy import DynamicBatchPolicy
from service.engine.slo import (
    HINTS,
    ArrivalRates,
    Backlog,
    Candidate,
    ControllerState,
    CostModel,
    Option,
    Situation,
    SloConfig,
    Work,
    decide,
    interpolate,
    loss_scale,
    predict,
    predictions,
    pressure_of,
    replay_batches,
    with_predictions,
)

K8, K4, T16 = Option("k8", 8), Option("k4", 4), Option("teacher", 16)
# the shipped students' rows (adherence per prompt class), rounded
Q8 = {"one_object": 0.954, "two_objects": 0.642, "overall": 0.720}
Q4 = {"one_object": 0.929, "two_objects": 0.511, "overall": 0.616}
OBJECTIVE = 1.0
CONFIG = SloConfig(objective_s=OBJECTIVE)  # headroom 0.8: target 0.8 s; pressure from 0.4 s


def situation(pred8: float | None, pred4: float | None, cls: str = "two_objects", hint="auto", now: float = 0.0):
    asked = Candidate(K8, Q8, unit_s=0.069, predicted_s=pred8)
    return Situation(hint, cls, asked, (Candidate(K4, Q4, unit_s=0.0345, predicted_s=pred4),), now)


# --- costs ---------------------------------------------------------------------------------------


def test_interpolation_is_linear_between_sizes_and_proportional_outside_them():
    table = {1: 0.01, 4: 0.016, 16: 0.04}
    assert interpolate(table, 1) == pytest.approx(0.01)
    assert interpolate(table, 2) == pytest.approx(0.012)
    assert interpolate(table, 10) == pytest.approx(0.028)
    assert interpolate(table, 32) == pytest.approx(0.08)  # no gain is assumed past what was measured
    assert interpolate({2: 0.02}, 1) == pytest.approx(0.01)


def test_costs_scale_with_steps_and_learn_from_what_was_observed():
    costs = CostModel(default_max_batch=4)
    assert costs.seconds("m", 8, 1) is None  # no profile, no prediction
    costs.use_profile("m", 4, {1: 0.04, 2: 0.06, 4: 0.1}, max_batch=4)
    assert costs.seconds("m", 8, 2) == pytest.approx(0.12)
    assert costs.unit_seconds("m", 4) == pytest.approx(0.025)
    for _ in range(100):  # the machine got twice as slow
        costs.observe("m", 4, 2, 0.12)
    assert costs.seconds("m", 8, 2) == pytest.approx(0.24, rel=1e-3)
    costs.observe("m", 4, 2, 100.0)  # an outlier moves it by at most one EMA step towards the bound
    assert costs.scale["m"] <= 0.9 * 2 + 0.1 * 4 + 1e-9
    with pytest.raises(ValueError):
        costs.use_profile("m", 4, {}, 4)


def test_arrival_rates_decay_over_their_window():
    rates = ArrivalRates(window_s=1.0)
    rates.add(K8, 10, now=0.0)
    assert rates.rates(0.0)[K8] == pytest.approx(10.0)
    assert rates.rates(1.0)[K8] == pytest.approx(10.0 / 2.718281828, rel=1e-6)


# --- predictions ---------------------------------------------------------------------------------


def test_replay_forms_the_batches_the_dynamic_policy_forms():
    """`replay_batches` is the greedy policy applied until the queue is empty (random queues)."""
    rng = random.Random(0)
    limits = {"a": 4, "b": 3}
    policy = DynamicBatchPolicy(8, 0.0, {(m, k): (b, 0.0) for m, b in limits.items() for k in (4, 8)})

    class Item:
        def __init__(self, w: Work, i: int) -> None:
            self.key, self.images, self.enqueued_at, self.w = (w.model, w.steps), w.images, float(i), w

    for _ in range(200):
        queue = [Work(rng.choice("ab"), rng.choice((4, 8)), rng.randint(1, 4)) for _ in range(rng.randint(0, 12))]
        items = [Item(w, i) for i, w in enumerate(queue)]
        expected = []
        while items:
            batch = policy.select(items, now=1e9).batch
            expected.append((Option(*batch[0].key), sum(i.images for i in batch)))
            items = [i for i in items if i not in batch]
        assert replay_batches(queue, limits.__getitem__) == expected


def profiled(fixed: float = 0.0, per_image: float = 0.01, max_batch: int = 4) -> CostModel:
    """k8 and k4 profiled at their own steps with a cost of `steps x (fixed + per_image x b)`."""
    costs = CostModel(default_max_batch=max_batch)
    for o in (K8, K4):
        table = {b: o.steps * (fixed + per_image * b) for b in (1, 2, 4, 8)}
        costs.use_profile(o.model, o.steps, table, max_batch)
    return costs


def test_request_level_prediction_counts_the_running_remainder_and_the_batches_ahead():
    costs = profiled()  # 0.08 s per k8 image, 0.04 per k4 image, max batch 4
    assert predict(Backlog(), K8, 1, costs) == pytest.approx(0.08)
    running = Backlog(running=(Work("k8", 8, 2),), running_elapsed_s=0.1)  # 0.16 s batch, 0.06 s left
    assert predict(running, K4, 1, costs) == pytest.approx(0.06 + 0.04)
    queued = Backlog(queued=(Work("k8", 8, 4), Work("k4", 4, 1)))  # a full k8 batch, then a k4 with room
    assert predict(queued, K4, 2, costs) == pytest.approx(0.32 + 0.12)  # joins the k4 batch: 3 images
    assert predict(queued, K8, 1, costs) == pytest.approx(0.32 + 0.04 + 0.08)  # the k8 batch is full: after all


def test_request_level_prediction_fills_batches_with_the_arrivals_expected_before_they_leave():
    costs = profiled()
    busy = Backlog(running=(Work("k8", 8, 1),), running_elapsed_s=0.0, arrivals={K8: 25.0})  # 0.08 s left
    # two more k8 images are expected in the 0.08 s before the runner is free: a batch of 3
    assert predict(busy, K8, 1, costs) == pytest.approx(0.08 + 3 * 0.08)
    idle = Backlog(arrivals={K8: 25.0})
    assert predict(idle, K8, 1, costs) == pytest.approx(0.08)  # an idle runner takes it at once


def test_step_level_prediction_interleaves_the_other_models_iterations():
    costs = profiled(fixed=0.01, per_image=0.001, max_batch=4)  # one iteration: 0.01 + 0.001 b
    alone = predict(Backlog("step"), K8, 1, costs)
    assert alone == pytest.approx(8 * 0.011)
    other = Backlog("step", running=(Work("k4", 2, 2),))  # two k4 images, two steps left each
    assert predict(other, K8, 1, costs) == pytest.approx(8 * 0.011 + 2 * 0.012)  # their two iterations
    crowded = Backlog("step", running=(Work("k8", 8, 4),), queued=(Work("k8", 8, 4),))
    # 9 images of 8 steps at 4 an iteration: 18 iterations of 0.014 s
    assert predict(crowded, K8, 1, costs) == pytest.approx(18 * 0.014)


def test_predictions_need_every_model_involved_to_be_profiled():
    costs = profiled()
    assert predict(Backlog(queued=(Work("teacher", 16, 1),)), K8, 1, costs) is None
    assert predictions(Backlog(), [K8, T16], 1, costs)[T16] is None


# --- the choice ----------------------------------------------------------------------------------


def test_without_an_objective_auto_serves_as_asked():
    d, state = decide(situation(50.0, 50.0), SloConfig(), ControllerState())
    assert d.option == K8 and d.reason == "as_asked" and state == ControllerState()


def test_an_idle_server_serves_as_asked_and_a_late_prediction_moves_the_request():
    d, _ = decide(situation(0.1, 0.05), CONFIG, ControllerState())
    assert (d.option, d.reason, d.over) == (K8, "as_asked", False)
    d, state = decide(situation(0.9, 0.45), CONFIG, ControllerState())
    assert (d.option, d.reason) == (K4, "slo") and state.pressure == 1.0


def test_nothing_fits_the_fastest_serves_and_shed_refuses_what_is_over_the_objective():
    d, _ = decide(situation(3.0, 1.5), CONFIG, ControllerState())
    assert (d.option, d.reason, d.over, d.reject) == (K4, "unmet", True, False)
    d, _ = decide(situation(3.0, 0.9), SloConfig(objective_s=1.0, shed=True), ControllerState())
    assert (d.option, d.reason, d.over, d.reject) == (K4, "unmet", False, False)  # late for the target only
    d, _ = decide(situation(3.0, 1.5), SloConfig(objective_s=1.0, shed=True), ControllerState())
    assert d.reject


def test_the_cheapest_quality_is_given_up_first():
    """Under a moderate pressure one-object prompts (0.025 lost from 8 to 4 steps) move and
    two-object prompts (0.131 lost) stay; at full pressure both move."""
    moderate = 0.6  # u = 0.75 of the 0.8 s target: pressure 0.5
    one, _ = decide(situation(moderate, 0.3, "one_object"), CONFIG, ControllerState())
    two, _ = decide(situation(moderate, 0.3, "two_objects"), CONFIG, ControllerState())
    assert (one.option, one.reason) == (K4, "pressure")
    assert (two.option, two.reason) == (K8, "as_asked")
    assert loss_scale(situation(0.0, 0.0).asked, situation(0.0, 0.0).cheaper) == pytest.approx(0.262)


def test_pressure_rises_at_once_and_falls_with_the_half_life():
    config = SloConfig(objective_s=1.0, recovery_half_life_s=1.0)
    _, state = decide(situation(0.9, 0.45, now=10.0), config, ControllerState())
    assert state == ControllerState(1.0, 10.0)
    # the queue is gone a moment later: the pressure is still high, so one-object prompts stay moved
    d, state = decide(situation(0.08, 0.04, "one_object", now=10.5), config, state)
    assert d.option == K4 and d.reason == "pressure" and state.pressure == pytest.approx(0.5**0.5)
    d, state = decide(situation(0.08, 0.04, "one_object", now=20.0), config, state)
    assert d.option == K8 and state.pressure < 0.01


def test_the_pressure_ramp():
    assert pressure_of(0.3, CONFIG) == 0.0  # below 0.5 x the 0.8 s target
    assert pressure_of(0.6, CONFIG) == pytest.approx(0.5)
    assert pressure_of(0.8, CONFIG) == 1.0
    assert pressure_of(0.79, SloConfig(objective_s=1.0, pressure_start=1.0)) == 0.0


def test_a_queue_that_drains_by_itself_gives_up_nothing_early():
    """Demand under the machine's capacity: the queue shrinks on its own, so no pre-emptive move;
    past the target the request moves all the same."""
    assert pressure_of(0.6, CONFIG, demand=0.7) == 0.0
    assert pressure_of(0.6, CONFIG, demand=1.3) == pytest.approx(0.5)
    assert pressure_of(0.9, CONFIG, demand=0.7) == 1.0
    calm = situation(0.6, 0.3, "one_object")
    d, _ = decide(replace(calm, demand=0.7), CONFIG, ControllerState())
    assert d.option == K8
    d, _ = decide(replace(calm, demand=1.3), CONFIG, ControllerState())
    assert (d.option, d.reason) == (K4, "pressure")


def test_best_and_fast():
    d, state = decide(situation(5.0, 0.1, hint="best"), CONFIG, ControllerState())
    assert (d.option, d.reason, d.over) == (K8, "as_asked", True) and state == ControllerState()
    d, _ = decide(situation(5.0, 0.1, hint="best"), SloConfig(objective_s=1.0, shed=True), ControllerState())
    assert d.reject
    d, _ = decide(situation(0.0, 0.0, hint="fast"), SloConfig(), ControllerState())
    assert (d.option, d.reason) == (K4, "fast")


def test_an_unevaluated_asked_option_is_never_assumed_worse_than_the_others():
    """The teacher at a step count without a row: on an idle server it serves; under pressure it
    moves first to what costs less without losing (here nothing has a row above k8's)."""
    asked = Candidate(T16, {}, unit_s=0.276, predicted_s=0.2)
    cheaper = (Candidate(K8, Q8, 0.069, 0.07), Candidate(K4, Q4, 0.0345, 0.04))
    d, _ = decide(Situation("auto", "two_objects", asked, cheaper), CONFIG, ControllerState())
    assert d.option == T16
    d, _ = decide(Situation("auto", "two_objects", asked, cheaper), CONFIG, ControllerState(pressure=0.3))
    assert d.option == K8 and d.reason == "pressure"


def test_config_checks():
    with pytest.raises(ValueError, match="headroom"):
        SloConfig(objective_s=1.0, headroom=0.0)
    with pytest.raises(ValueError, match="objective_s"):
        SloConfig(objective_s=-1.0)
    assert SloConfig().hint == "best" and SloConfig(objective_s=1.0).hint == "auto"
    assert SloConfig(objective_s=2.0).half_life_s == 2.0


# --- properties over random situations -----------------------------------------------------------


def random_situation(rng: random.Random, hint: str) -> Situation:
    """An asked option and up to three cheaper ones, random qualities, predictions in cost order."""
    n = rng.randint(0, 3)
    units = sorted((rng.uniform(0.01, 0.4) for _ in range(n + 1)), reverse=True)
    backlog = rng.uniform(0.0, 0.4)  # predictions from about nothing to past the 0.8 s target
    classes = ("one_object", "two_objects")

    def cand(i: int, u: float) -> Candidate:
        quality = {} if (i == 0 and rng.random() < 0.2) else {c: rng.uniform(0.3, 1.0) for c in classes}
        return Candidate(Option(f"m{i}", 4), quality, u, backlog + u)

    options = [cand(i, u) for i, u in enumerate(units)]
    return Situation(hint, rng.choice(classes), options[0], tuple(options[1:]), rng.uniform(0, 100))


def test_best_is_never_downgraded():
    rng = random.Random(1)
    for _ in range(500):
        s = random_situation(rng, "best")
        state = ControllerState(rng.random(), rng.uniform(0, 100))
        for config in (CONFIG, SloConfig(objective_s=0.1, shed=True), SloConfig()):
            d, _ = decide(s, config, state)
            assert d.option == s.asked.option and d.reason == "as_asked" and not d.downgraded


def test_more_work_ahead_never_picks_a_more_expensive_option():
    """The same request with every prediction later by the same amount (more work queued ahead of
    it, none of it joinable): the option chosen costs no more per image, from any state."""
    rng = random.Random(2)
    for _ in range(500):
        s = random_situation(rng, "auto")
        state = ControllerState(rng.choice((0.0, rng.random())), s.now - rng.uniform(0, 5))
        cost = {c.option: c.unit_s for c in (s.asked, *s.cheaper)}
        previous = None
        for extra in (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 2.0):
            shifted = with_predictions(s, {c.option: c.predicted_s + extra for c in (s.asked, *s.cheaper)})
            d, _ = decide(shifted, CONFIG, state)
            if previous is not None:
                assert cost[d.option] <= cost[previous] + 1e-12, (s, extra)
            previous = d.option


def test_every_move_has_a_reason_and_auto_never_upgrades():
    rng = random.Random(3)
    for _ in range(500):
        hint = rng.choice(HINTS)
        s = random_situation(rng, hint)
        d, _ = decide(s, CONFIG, ControllerState(rng.random(), s.now))
        assert d.option in {c.option for c in (s.asked, *s.cheaper)}
        assert (d.option == s.asked.option) == (d.reason == "as_asked")
        if d.option != s.asked.option:
            assert d.reason in ({"fast"} if hint == "fast" else {"pressure", "slo", "unmet"})
