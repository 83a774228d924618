"""What goes into and comes out of `Engine.generate()`, and the ways it can refuse or fail.

Each error carries what the HTTP layer needs to answer (a status and a reason for the
rejection metric) without the engine knowing HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class GenerateRequest:
    """One client request: `n` images of one prompt; image j uses seed + j.

    `steps` and `guidance` left as None take the model's defaults; `width`/`height`, when given,
    must equal the model's resolution (the engine checks, so every route gets the same answer).
    """

    model: str
    prompt: str
    seed: int
    n: int = 1
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + j for j in range(self.n)]


@dataclass(frozen=True)
class GenerateResult:
    """uint8 images (n, R, R, C) with their seeds, the settings used, and where the time went (seconds)."""

    model: str
    steps: int
    guidance: float
    images: np.ndarray
    seeds: list[int]
    queue_s: float
    compute_s: float
    total_s: float
    batch_images: int = field(default=0, metadata={"doc": "images in the batch this request ran in"})


class EngineError(Exception):
    """Base of the engine's refusals; `reason` is the bounded label of the rejection metric."""

    status = 500
    reason = "error"


class UnknownModel(EngineError):
    status = 404
    reason = "unknown_model"


class QueueFull(EngineError):
    """The queue bound is reached; try again after `retry_after_s`."""

    status = 429
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(EngineError):
    """Not warmed up yet, or draining after SIGTERM: admission is closed."""

    status = 503
    reason = "not_ready"

    def __init__(self, message: str, reason: str = "not_ready") -> None:
        super().__init__(message)
        self.reason = reason


class DeadlineExceeded(EngineError):
    status = 504
    reason = "deadline"


class BatchFailed(EngineError):
    """The backend raised while running this request's batch (other batches are unaffected)."""

    status = 500
    reason = "backend_error"
