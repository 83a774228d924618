"""The real service (uvicorn, engine, batcher, HTTP) over a simulated denoiser with a given cost curve.

Step-level scheduling pays where an evaluation of B images costs little more than one (a GPU) and
costs nothing extra where it costs B times one (these CPUs: BENCHMARKS.md, "Step-level against
request-level batching"). Without a GPU, this server lets `fewstep bench step-sched --simulate`
measure the scheduler itself under a GPU's cost curve: everything is the production path except the
denoiser, which is `service.fakes.FakeDenoiser` sleeping `fixed_ms + per_row_ms * rows` per call
(rows = images x 2 with classifier-free guidance, as the teacher's bundle evaluates them). Sleeping
holds no CPU, so the cost curve is what was asked, whatever else the machine runs; the HTTP layer,
PNG encoding and the scheduler run for real. The figures it gives are the scheduler's under that
cost model, not a GPU's: BENCHMARKS.md labels them so. `step-sched` starts it as a child process:

    fewstep bench sim-server --port 8000 --scheduling step --cost-ms 14,0.09
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.server import ServerProcess

log = logging.getLogger(__name__)

NAME = "sim"


def parse_cost(text: str) -> tuple[float, float]:
    """'FIXED_MS,PER_ROW_MS' -> (fixed_ms, per_row_ms); a ValueError naming the form otherwise."""
    try:
        fixed, per_row = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"cost {text!r}: expected FIXED_MS,PER_ROW_MS (two numbers, e.g. 14,0.09)") from None
    if fixed < 0 or per_row < 0:
        raise ValueError(f"cost {text!r}: both terms must be >= 0 ms")
    return fixed, per_row


class SimServerProcess(ServerProcess):
    """`fewstep bench sim-server` in a subprocess, with `fewstep serve`'s batching flags."""

    label = "the simulated-denoiser server"

    def __init__(self, log_path: Path, cost_ms: str, scheduling: str, max_batch_images: int | None = None) -> None:
        super().__init__([], log_path)
        self.cmd = [sys.executable, "-m", "fewstep_cli", "bench", "sim-server", "--port", str(self.port)]
        self.cmd += ["--cost-ms", cost_ms]
        self.cmd += ["--scheduling", scheduling]
        if max_batch_images:
            self.cmd += ["--max-batch-images", str(max_batch_images)]


def sim_pipeline(cost_ms: tuple[float, float], steps: Sequence[int] = (4, 8), resolution: int = 32):
    """The service's `Pipeline` over the fake text encoder and a denoiser costing `cost_ms` per call."""
    from service.fakes import FakeDenoiser, fake_pipeline

    fixed, per_row = cost_ms
    denoiser = FakeDenoiser(max_batch=4096, delay_s=fixed / 1000, per_image_s=per_row / 1000)
    return fake_pipeline(NAME, denoiser, steps=steps, resolution=resolution, max_tokens=16)


@dataclass(frozen=True)
class SimServerConfig:
    """The simulated server's flags: the denoiser's cost and `fewstep serve`'s batching settings."""

    port: int
    cost_ms: tuple[float, float]  # (fixed_ms, per_row_ms) per denoiser call, as `parse_cost` gives
    steps: tuple[int, ...] = (4, 8)
    resolution: int = 32
    scheduling: str = "request"
    max_batch_images: int | None = None  # None: derived from the warm-up profile, as `fewstep serve`
    max_wait_s: float | None = None
    log_level: str = "info"


def serve_simulated(cfg: SimServerConfig) -> int:
    """The real service over `sim_pipeline`, until SIGTERM (`service.server.serve`'s exit status)."""
    from service.cli import quiet_logging
    from service.server import serve
    from service.settings import load_settings

    overrides = {"port": cfg.port, "scheduling": cfg.scheduling, "log_level": cfg.log_level}
    bounds = {"max_batch_images": cfg.max_batch_images, "max_wait_s": cfg.max_wait_s}
    overrides |= {k: v for k, v in bounds.items() if v is not None}  # 0 s is a setting, not "unset"
    settings = load_settings(**overrides)
    logging.getLogger().setLevel(cfg.log_level.upper())
    quiet_logging(cfg.log_level)
    log.info("simulated denoiser: %.2f ms + %.3f ms per row per call", *cfg.cost_ms)
    return serve(settings, [sim_pipeline(cfg.cost_ms, cfg.steps, cfg.resolution)])
