"""Step-level (iteration-level) batching: images join and leave the running batch between steps.

Request-level batching (`service.engine.policy`) runs a batch through all its steps, so a request
that arrives a moment later waits for the whole batch, and 4-step and 8-step requests never share
an evaluation. Here each in-flight image carries its own state (z, step index, step plan,
guidance, text states) and one iteration is one denoiser evaluation over every in-flight image of
a model, each at its own time t. After the evaluation an image either takes its posterior step
(the shared `fewstep.sampler.step_update` with per-image (B, 1, 1, 1) coefficients read from
the manifest's step plans) or, at its last step, retires with its x_hat.

Byte identity with request-level mode: per image, the same float32 operations run in the same
order (float64 coefficients rounded once to float32, whether passed as Python floats or as
per-image arrays), the noise is the image's own seeded stream (`fewstep.rng`), and the guided
evaluation is `Pipeline.denoise` whose rows do not depend on their neighbours.

Two pieces, both free of asyncio:

- `select_admissions`: the pure admission policy. First come, first admitted, per model up to its
  max batch; a request larger than the free slots is admitted in part (its images are
  independent) and blocks later requests of the same model until it is all in, so none starves.
- `StepBatch`: the in-flight images of one pipeline; `admit` and `iterate` run on the runner
  thread (they call the text encoder and the denoiser).

`service.engine.step_loop` drives them from the engine's event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from fewstep.images import to_uint8
from fewstep.rng import SeededNoise
from fewstep.sampler import StepCoefficients, step_update, uses_noise
from fewstep.schedule import StepPlan
from service.pipeline import ImageJob, Pipeline

T = TypeVar("T")


def select_admissions(
    queue: Sequence[T],
    free: Mapping[str, int],
    model_of: Callable[[T], str],
    waiting_of: Callable[[T], int],
) -> list[tuple[T, int]]:
    """(request, images to admit now) in queue order, given the free slots of each model.

    Requests of one model are admitted strictly in arrival order: once one does not fit whole,
    later requests of that model wait (they would otherwise overtake it forever under load).
    Other models have their own slots and are not held up.
    """
    slots = dict(free)
    out: list[tuple[T, int]] = []
    blocked: set[str] = set()
    for item in queue:
        model = model_of(item)
        if model in blocked:
            continue
        want = waiting_of(item)
        take = min(want, max(slots.get(model, 0), 0))
        if take > 0:
            out.append((item, take))
            slots[model] -= take
        if take < want:
            blocked.add(model)
    return out


@dataclass(eq=False)
class StepImage:
    """One in-flight image: its job, where it is in its step plan, and its text states."""

    owner: Hashable
    index: int  # position in its request
    job: ImageJob
    plan: StepPlan
    noise: SeededNoise
    z: np.ndarray  # (C, R, R) float32: z at plan.t[i]
    states: np.ndarray  # (L, D)
    mask: np.ndarray  # (L,)
    null: tuple[np.ndarray, np.ndarray] | None  # the null/negative prompt's states, for a guided teacher row
    i: int = 0
    image: np.ndarray | None = field(default=None, repr=False)  # uint8 (R, R, C) once retired

    @property
    def last_step(self) -> bool:
        return self.i == self.plan.steps - 1


@dataclass(frozen=True)
class Iteration:
    """What one iteration did: the images it evaluated and those that retired."""

    size: int
    finished: list[StepImage]


class StepBatch:
    """The in-flight images of one pipeline. Not thread-safe: one thread (the runner) at a time."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        m = pipeline.manifest
        self.shape = (m.channels, m.resolution, m.resolution)
        self.images: list[StepImage] = []

    def __len__(self) -> int:
        return len(self.images)

    def admit(self, owner: Hashable, jobs: Sequence[ImageJob], first_index: int = 0) -> list[StepImage]:
        """Encode the jobs' prompts, draw their initial noise (stream 0) and add them at step 0."""
        if not jobs:
            return []
        for job in jobs:
            self.pipeline.check(job)
        states, mask, null = self.pipeline.text_states(jobs)
        noise = [SeededNoise([j.seed], self.shape) for j in jobs]
        added = [
            StepImage(
                owner=owner,
                index=first_index + k,
                job=job,
                plan=self.pipeline.plan(job.steps),
                noise=noise[k],
                z=noise[k].initial()[0],
                states=states[k],
                mask=mask[k],
                null=None if null is None or job.guidance == 1.0 else (null[0][k], null[1][k]),
            )
            for k, job in enumerate(jobs)
        ]
        self.images.extend(added)
        return added

    def drop(self, owner: Hashable) -> int:
        """Remove `owner`'s images (cancelled between steps); how many were removed."""
        before = len(self.images)
        self.images = [im for im in self.images if im.owner != owner]
        return before - len(self.images)

    def iterate(self) -> Iteration:
        """One denoiser evaluation over every in-flight image, each at its own step; retire the finished."""
        images = self.images
        if not images:
            return Iteration(0, [])
        x_hat = self.pipeline.denoise(*self._inputs(images))
        done = [k for k, im in enumerate(images) if im.last_step]
        going = [k for k, im in enumerate(images) if not im.last_step]
        if going:
            z = np.stack([images[k].z for k in going])
            z_next = self._update(z, x_hat[going], [images[k] for k in going])
            for row, k in enumerate(going):
                images[k].z = z_next[row]
                images[k].i += 1
        finished = [images[k] for k in done]
        if done:
            for im, image in zip(finished, to_uint8(x_hat[done]), strict=True):
                im.image = image
            self.images = [images[k] for k in going]
        return Iteration(len(images), finished)

    def _inputs(self, images: list[StepImage]) -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
        """(z, t, cond, w) of `Pipeline.denoise` for the in-flight images at their own steps."""
        z = np.stack([im.z for im in images])
        t = np.array([im.plan.t[im.i] for im in images], dtype=np.float32)
        w = np.array([im.job.guidance for im in images], dtype=np.float32)
        states = np.stack([im.states for im in images])
        mask = np.stack([im.mask for im in images])
        null = None
        if any(im.null is not None for im in images):  # rows without one are never read (w = 1 or a student)
            null = (
                np.stack([im.states if im.null is None else im.null[0] for im in images]),
                np.stack([im.mask if im.null is None else im.null[1] for im in images]),
            )
        d = None
        if self.pipeline.manifest.takes_step_size:  # a shortcut student: d = 1 / each image's own step count
            d = np.array([1.0 / im.plan.steps for im in images], dtype=np.float32)
        return z, t, (states, mask, null, d), w

    def _update(self, z: np.ndarray, x_hat: np.ndarray, images: list[StepImage]) -> np.ndarray:
        """z at each image's next time: the shared `fewstep.sampler.step_update` with per-image coefficients."""
        sampler = self.pipeline.manifest.sampler
        coeffs = StepCoefficients.per_image([im.plan for im in images], [im.i for im in images])
        eps = None
        if uses_noise(sampler):
            eps = np.stack([im.noise.step(im.i)[0] for im in images])  # stream i + 1: step i's noise
        return step_update(sampler, z, x_hat, coeffs, eps)
