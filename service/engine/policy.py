"""The batching policy: which queued requests run together next, and when. Pure: no clock, no I/O.

Request-level dynamic batching with Triton's dynamic-batcher semantics. The oldest request (the
head) always runs in the next batch, so nothing starves; it takes along later requests with the
same key (model and step count: one `Pipeline.generate` call runs one step count) while they fit
in `max_batch_images`, skipping those that would overflow so that a large request does not block
smaller ones behind it (the head is still served first). The batch leaves as soon as it is full,
or as soon as it cannot grow from what is queued, or when the head has waited `max_wait_s`.

The engine asks only when its runner is free, so while a batch computes the next one fills up;
`max_wait_s` bounds the extra latency of waiting for company when the runner is idle.

`limits` overrides both bounds per key (the engine fills it from the warm-up cost profile of each
model, `service.engine.profile`); keys not in it use the defaults.

The request-level scheduler (`service.engine.request_loop.RequestLoop`) is its only user and needs
only `select` and `Decision`; step-level scheduling admits with `step_scheduler.select_admissions`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    """What the policy sees of a queued request."""

    @property
    def key(self) -> Hashable: ...

    @property
    def images(self) -> int: ...

    @property
    def enqueued_at(self) -> float: ...


Q = TypeVar("Q", bound=Queued)


@dataclass(frozen=True)
class Decision(Generic[Q]):
    """`batch` to run now (empty: none yet), and when to ask again if nothing else happens."""

    batch: list[Q] = field(default_factory=list)
    wake_at: float | None = None


class BatchPolicy(Protocol):
    """Chooses the next batch from the queue in arrival order."""

    def select(self, queue: Sequence[Q], now: float) -> Decision[Q]: ...


@dataclass(frozen=True)
class DynamicBatchPolicy:
    """Same-key requests, oldest first, up to `max_batch_images`, waiting at most `max_wait_s`."""

    max_batch_images: int
    max_wait_s: float
    limits: Mapping[Hashable, tuple[int, float]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        bounds = [(self.max_batch_images, self.max_wait_s), *self.limits.values()]
        for max_batch, max_wait in bounds:
            if max_batch < 1:
                raise ValueError(f"max_batch_images must be >= 1, got {max_batch}")
            if max_wait < 0:
                raise ValueError(f"max_wait_s must be >= 0, got {max_wait}")

    def bounds(self, key: Hashable) -> tuple[int, float]:
        """(max batch images, max wait seconds) for requests with this key."""
        return self.limits.get(key, (self.max_batch_images, self.max_wait_s))

    def select(self, queue: Sequence[Q], now: float) -> Decision[Q]:
        if not queue:
            return Decision()
        head = queue[0]
        max_batch, max_wait = self.bounds(head.key)
        batch, total, blocked = [head], head.images, False
        for item in queue[1:]:
            if total >= max_batch:
                break
            if item.key != head.key:
                continue
            if total + item.images <= max_batch:
                batch.append(item)
                total += item.images
            else:
                blocked = True  # a same-key request that will not fit: waiting cannot fill this batch
        deadline = head.enqueued_at + max_wait
        if total >= max_batch or blocked or now >= deadline:
            return Decision(batch)
        return Decision(wake_at=deadline)
