"""What goes into and comes out of `Engine.generate()`: the request as a client sent it, the request
once resolved against its model, and the result.

The errors `generate` raises are the domain errors of `service.errors` (re-exported by
`service.engine`); they carry no HTTP status (the API layer maps them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.engine.slo import Hint, Option, Reason
from service.pipeline import ImageJob


@dataclass(frozen=True)
class GenerateRequest:
    """One client request: `n` images of one prompt; image j uses seed + j.

    `steps` and `guidance` left as None take the model's defaults; `width`/`height`, when given,
    must equal the model's resolution (the engine checks, so every route gets the same answer).
    `quality` is the hint of the latency controller (`service.engine.slo`: auto, best or fast);
    None takes the deployment's default (auto with an objective, best without).
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
    quality: str | None = None

    @property
    def seeds(self) -> list[int]:
        return [self.seed + j for j in range(self.n)]


@dataclass(frozen=True)
class Routing:
    """How a request was routed (`service.engine.router`): the option it asked for, the one that
    serves it and why, the prediction that decided it and the objective it was held to. Every reply
    carries it, so no request is downgraded silently."""

    hint: Hint
    asked: Option
    served: Option
    reason: Reason
    prompt_class: str
    predicted_s: float | None = None
    objective_s: float | None = None
    pressure: float = 0.0
    reject: bool = False

    @property
    def downgraded(self) -> bool:
        return self.served != self.asked


@dataclass(frozen=True)
class ResolvedRequest:
    """A request with every choice made (`Engine.resolve`): what the schedulers and results read.

    No field is optional, so nothing downstream falls back to a default of its own; an empty
    `negative_prompt` means none (the null prompt guides), as in `ImageJob`.
    """

    model: str
    prompt: str
    seed: int
    n: int
    steps: int
    guidance: float
    negative_prompt: str

    @property
    def seeds(self) -> list[int]:
        return [self.seed + j for j in range(self.n)]

    def jobs(self) -> list[ImageJob]:
        """One `ImageJob` per image (the unit the pipelines and the step batch work on)."""
        return [ImageJob(self.prompt, seed, self.steps, self.guidance, self.negative_prompt) for seed in self.seeds]


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
    routing: Routing | None = field(default=None, metadata={"doc": "asked, served and why (None: not routed)"})
