"""The runner: the one thread that owns the backends and runs `Pipeline.generate`.

Backends (ONNX Runtime sessions, TensorRT contexts, torch modules) are fastest and simplest when
one thread drives them: each call already uses every core through intra-op threads, and a second
caller would only contend for them. So every call into a pipeline, warm-up included, goes through
this single-worker executor, and the event loop stays free to accept and queue requests while a
batch computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from service.pipeline import ImageJob, Pipeline

log = logging.getLogger(__name__)

R = TypeVar("R")


class Runner:
    """Runs batches on one dedicated thread; `run` is awaited from the event loop."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fewstep-runner")

    async def run(self, pipeline: Pipeline, jobs: Sequence[ImageJob]) -> tuple[np.ndarray, float]:
        """uint8 images for `jobs` and the seconds the backend took."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _timed_generate, pipeline, list(jobs))

    async def call(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(*args)` on the runner thread (step-level scheduling runs one iteration per call)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def warm(self, pipelines: Sequence[Pipeline]) -> None:
        """One image per model and step count, so first requests do not pay for lazy initialisation."""
        for p in pipelines:
            for steps in sorted(p.manifest.steps):
                job = ImageJob("warm-up", seed=0, steps=steps, guidance=p.manifest.guidance.default)
                _, seconds = await self.run(p, [job])
                log.info("warmed %s at %d steps in %.3f s", p.name, steps, seconds)

    def close(self) -> None:
        """Stop taking work; a batch already running finishes on its thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed_generate(pipeline: Pipeline, jobs: list[ImageJob]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    images = pipeline.generate(jobs)
    return images, time.perf_counter() - start
