"""A loaded bundle as an image generator: prompts, seeds, steps and guidance in, uint8 images out.

The k-step loop is `fewstep.sampler` (the one home of the sampling maths) with the step plan the
manifest stores (float64 coefficients computed at export), over a backend's `Denoiser`. Teachers
get classifier-free guidance as one doubled batch (conditional and null/negative halves) combined
by `fewstep.guidance.doubled_guidance`; students take w as a network input (one evaluation per
step). A shortcut student's bundle (`Manifest.takes_step_size`) serves every K of its manifest
with one graph: each row is fed d = 1 / its step count beside t and w, and the update is the
shared sampler's. Each image's noise comes from its own seed (`fewstep.rng.SeededNoise`), so an image is the
same alone or inside any batch, which is what lets the service batch freely.

`fewstep generate` and the service both call `Pipeline.generate`; nothing else samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from fewstep.bundle import Manifest
from fewstep.guidance import evaluations_per_image_step, guided_call
from fewstep.images import to_uint8
from fewstep.rng import SeededNoise, check_seed
from fewstep.sampler import SAMPLERS
from fewstep.schedule import StepPlan
from service.backends.base import Denoiser, chunked
from service.errors import InvalidArgument
from service.text import PromptEncoder


@dataclass(frozen=True)
class ImageJob:
    """One image: everything that determines it."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    negative_prompt: str | None = None


class Pipeline:
    """Generates images for one bundle through one backend."""

    def __init__(
        self,
        manifest: Manifest,
        prompts: PromptEncoder,
        denoiser: Denoiser,
        backend: str = "?",
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.manifest = manifest
        self.prompts = prompts
        self.denoiser = denoiser
        self.backend = backend
        # What a tuning cache (service.tuning) keys this pipeline's measurements by: the bundle's
        # hashes, the backend path that runs it and its settings. None: never cached.
        self.identity = identity
        self._sample = SAMPLERS[manifest.sampler]
        self._plans = {k: manifest.plan(k) for k in manifest.steps}

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def evaluations_per_image_step(self) -> int:
        """Network evaluations per image per step (guidance doubles it for a teacher)."""
        return evaluations_per_image_step(self.manifest.guidance.network_input)

    def check(self, job: ImageJob) -> None:
        """Raise `InvalidArgument` naming the domain field (`steps`, `guidance`, ...) if `job` cannot run."""
        m = self.manifest
        if job.steps not in self._plans:
            raise InvalidArgument("steps", f"model {m.name!r} supports steps {sorted(self._plans)}, not {job.steps}")
        g = m.guidance
        if not g.min <= job.guidance <= g.max:
            raise InvalidArgument("guidance", f"model {m.name!r} accepts guidance in [{g.min:g}, {g.max:g}]")
        if job.negative_prompt and g.network_input:
            raise InvalidArgument(
                "negative_prompt", f"model {m.name!r} has guidance distilled into the network: no negative prompt"
            )
        try:
            check_seed(job.seed)
        except ValueError as e:
            raise InvalidArgument("seed", str(e)) from None

    def generate(self, jobs: Sequence[ImageJob]) -> np.ndarray:
        """uint8 (N, R, R, C) images, one per job. All jobs must share `steps`."""
        if not jobs:
            return np.zeros((0, self.manifest.resolution, self.manifest.resolution, self.manifest.channels), np.uint8)
        steps = jobs[0].steps
        for job in jobs:
            self.check(job)
            if job.steps != steps:
                raise InvalidArgument("steps", "one generate() call runs one step count")
        x = self.sample(jobs, steps)
        return to_uint8(x)

    def sample(self, jobs: Sequence[ImageJob], steps: int) -> np.ndarray:
        """The final x_hat, float32 (N, C, R, R) in about [-1, 1] (parity tests compare this)."""
        m = self.manifest
        w = np.array([j.guidance for j in jobs], dtype=np.float32)
        noise = SeededNoise([j.seed for j in jobs], (m.channels, m.resolution, m.resolution))
        cond = (*self.text_states(jobs), self.step_sizes(jobs))
        return self._sample(self.denoise, self._plans[steps], cond, w, noise, np.zeros(1, np.float32))

    def step_sizes(self, jobs: Sequence[ImageJob]) -> np.ndarray | None:
        """d = 1 / steps per job for a shortcut denoiser (the step size its sampler runs at), else None."""
        if not self.manifest.takes_step_size:
            return None
        return np.array([1.0 / j.steps for j in jobs], dtype=np.float32)

    def plan(self, steps: int) -> StepPlan:
        """The manifest's step plan for `steps` (float64 coefficients computed at export)."""
        return self._plans[steps]

    def text_states(self, jobs: Sequence[ImageJob]) -> tuple:
        """The `cond` of `denoise` for `jobs`: (states, mask, null) with null None unless some row is guided."""
        m = self.manifest
        states, mask = self.prompts([j.prompt for j in jobs])
        null = None
        if not m.guidance.network_input and any(j.guidance != 1.0 for j in jobs):
            null = self.prompts([j.negative_prompt or m.text.null_prompt for j in jobs])
        return states, mask, null

    def denoise(self, z: np.ndarray, t: np.ndarray, cond, w: np.ndarray) -> np.ndarray:
        """One guided evaluation x_hat^w per row: the `denoise` callable of `fewstep.sampler`.

        `cond` is `text_states`' (states, mask, null), with the rows' step sizes d (`step_sizes`)
        appended for a shortcut denoiser.

        Rows are independent (per-row t, text and w), which is what step-level batching relies on:
        a teacher evaluates the null/negative half only for rows with w != 1, and w = 1 rows take
        x_cond exactly, as they would alone (no rounding through the difference).
        """
        states, mask, null, *step_size = cond
        run = self.denoiser
        network_input = self.manifest.guidance.network_input
        call = partial(chunked, run, run.max_batch)
        if step_size and step_size[0] is not None:
            d = step_size[0]

            def call(z, t, states, mask, w=None):  # a shortcut student: every row has its own d
                return chunked(run, run.max_batch, z, t, states, mask, w, d)

        return guided_call(call, z, t, (states, mask), null, w, network_input)
