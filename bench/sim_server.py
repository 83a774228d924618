"""The real service (uvicorn, engine, batcher, HTTP) over a simulated denoiser with a given cost curve.

Step-level scheduling pays where an evaluation of B images costs little more than one (a GPU) and
costs nothing extra where it costs B times one (these CPUs: BENCHMARKS.md, "Step-level against
request-level batching"). Without a GPU, this server lets `bench.step_sched --simulate` measure the
scheduler itself under a GPU's cost curve: everything is the production path except the denoiser,
which is `service.backends.fake.FakeDenoiser` sleeping `fixed_ms + per_row_ms * rows` per call (rows
= images x 2 with classifier-free guidance, as the teacher's bundle evaluates them). Sleeping holds
no CPU, so the cost curve is what was asked, whatever else the machine runs; the HTTP layer, PNG
encoding and the scheduler run for real. The figures it gives are the scheduler's under that cost
model, not a GPU's: BENCHMARKS.md labels them so.

    python -m bench.sim_server --port 8000 --scheduling step --cost-ms 14,0.09
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
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
    """`python -m bench.sim_server` in a subprocess, with `fewstep serve`'s batching flags."""

    label = "the simulated-denoiser server"

    def __init__(self, log_path: Path, cost_ms: str, scheduling: str, max_batch_images: int | None = None) -> None:
        super().__init__([], log_path)
        self.cmd = [sys.executable, "-m", "bench.sim_server", "--port", str(self.port), "--cost-ms", cost_ms]
        self.cmd += ["--scheduling", scheduling]
        if max_batch_images:
            self.cmd += ["--max-batch-images", str(max_batch_images)]


def sim_pipeline(cost_ms: tuple[float, float], steps: Sequence[int] = (4, 8), resolution: int = 32):
    """The service's `Pipeline` over the fake text encoder and a denoiser costing `cost_ms` per call."""
    from service.backends.fake import FakeDenoiser, fake_pipeline

    fixed, per_row = cost_ms
    denoiser = FakeDenoiser(max_batch=4096, delay_s=fixed / 1000, per_image_s=per_row / 1000)
    return fake_pipeline(NAME, denoiser, steps=steps, resolution=resolution, max_tokens=16)


def main(argv: list[str] | None = None) -> int:
    from service.cli import quiet_logging
    from service.server import serve
    from service.settings import load_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cost-ms", required=True, help="FIXED_MS,PER_ROW_MS: one denoiser call's cost")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--scheduling", choices=["request", "step"], default="request")
    p.add_argument("--max-batch-images", type=int)
    p.add_argument("--max-wait-s", type=float)
    p.add_argument("--log-level", default="info")
    a = p.parse_args(argv)
    try:
        cost = parse_cost(a.cost_ms)
    except ValueError as e:
        p.error(f"--cost-ms: {e}")
    overrides = {"port": a.port, "scheduling": a.scheduling, "log_level": a.log_level}
    bounds = {"max_batch_images": a.max_batch_images, "max_wait_s": a.max_wait_s}
    overrides |= {k: v for k, v in bounds.items() if v is not None}  # 0 s is a setting, not "unset"
    settings = load_settings(**overrides)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_logging(a.log_level)
    log.info("simulated denoiser: %.2f ms + %.3f ms per row per call", *cost)
    return serve(settings, [sim_pipeline(cost, a.steps, a.resolution)])


if __name__ == "__main__":
    raise SystemExit(main())
