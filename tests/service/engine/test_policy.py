"""The batching policy alone: which queued requests leave together, and when (no clock, no engine)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from service.engine.policy import DynamicBatchPolicy


@dataclass(frozen=True)
class Item:
    name: str
    key: tuple[str, int]
    images: int
    enqueued_at: float


A4, A8, B4 = ("a", 4), ("a", 8), ("b", 4)


def names(decision) -> list[str]:
    return [i.name for i in decision.batch]


def test_empty_queue_waits_for_an_arrival():
    d = DynamicBatchPolicy(8, 0.01).select([], now=5.0)
    assert d.batch == [] and d.wake_at is None


def test_a_lone_request_waits_max_wait_then_leaves():
    policy = DynamicBatchPolicy(8, 0.05)
    queue = [Item("r1", A4, 1, enqueued_at=10.0)]
    early = policy.select(queue, now=10.01)
    assert early.batch == [] and early.wake_at == pytest.approx(10.05)
    assert names(policy.select(queue, now=10.05)) == ["r1"]


def test_a_full_batch_leaves_without_waiting():
    policy = DynamicBatchPolicy(4, 10.0)
    queue = [Item(f"r{i}", A4, 2, enqueued_at=0.0) for i in range(3)]
    assert names(policy.select(queue, now=0.0)) == ["r0", "r1"]


def test_only_same_model_and_step_count_share_a_batch_mixed_n():
    policy = DynamicBatchPolicy(8, 0.0)
    queue = [
        Item("a4-1", A4, 3, 0.0),
        Item("a8", A8, 1, 0.1),
        Item("b4", B4, 1, 0.2),
        Item("a4-2", A4, 1, 0.3),
        Item("a4-3", A4, 4, 0.4),
    ]
    assert names(policy.select(queue, now=1.0)) == ["a4-1", "a4-2", "a4-3"]


def test_head_always_runs_first_even_with_another_key_behind():
    policy = DynamicBatchPolicy(8, 0.0)
    queue = [Item("b4", B4, 1, 0.0), Item("a4-1", A4, 4, 0.1), Item("a4-2", A4, 4, 0.2)]
    assert names(policy.select(queue, now=1.0)) == ["b4"]


def test_a_request_that_would_overflow_is_skipped_not_blocking_smaller_ones():
    policy = DynamicBatchPolicy(8, 0.0)
    queue = [Item("r1", A4, 5, 0.0), Item("big", A4, 4, 0.1), Item("small", A4, 3, 0.2)]
    assert names(policy.select(queue, now=1.0)) == ["r1", "small"]


def test_a_batch_that_cannot_grow_from_the_queue_leaves_before_max_wait():
    policy = DynamicBatchPolicy(8, 10.0)
    queue = [Item("r1", A4, 6, 0.0), Item("r2", A4, 4, 0.0)]
    assert names(policy.select(queue, now=0.0)) == ["r1"]


def test_a_request_larger_than_max_batch_still_runs_alone():
    policy = DynamicBatchPolicy(2, 10.0)
    queue = [Item("r1", A4, 5, 0.0), Item("r2", A4, 1, 0.0)]
    assert names(policy.select(queue, now=0.0)) == ["r1"]


def test_max_wait_counts_from_the_oldest_request():
    policy = DynamicBatchPolicy(8, 1.0)
    queue = [Item("old", A4, 1, 0.0), Item("new", A4, 1, 0.9)]
    assert policy.select(queue, now=0.95).wake_at == pytest.approx(1.0)
    assert names(policy.select(queue, now=1.0)) == ["old", "new"]


@pytest.mark.parametrize(("max_batch", "max_wait"), [(0, 0.0), (1, -1.0)])
def test_bad_bounds_are_refused(max_batch: int, max_wait: float):
    with pytest.raises(ValueError, match="max_"):
        DynamicBatchPolicy(max_batch, max_wait)
