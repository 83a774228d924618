"""`backend.kind = "auto"`: time each candidate path at start-up and serve the fastest allowed one.

Which of ONNX Runtime fp32, OpenVINO fp32 and OpenVINO bf16 is fastest depends on the CPU (AMX or
not, cores, cache) and the network, so it is measured on the machine that serves, the way the
engine's batch profile measures batch sizes. The rules:

- Quality first: fp32 is always allowed; a reduced precision only where this bundle's own
  measurement of that path passed its stated threshold (`quality_allows`: the manifest's
  `reduced_precision`, written by `python -m scripts.precision`: the bundle's sampler in that
  precision and in fp32 on fixed prompts and seeds, pixel difference and evaluator adherence). A
  path never measured on the bundle, or measured and failed, is not served. Refused candidates
  are logged with the figures.
- Stability: every built candidate is timed in interleaved rounds (drift on a shared machine hits
  all alike) and keeps its fastest round; the winner is the *first* candidate in the configured
  order whose time is within `tolerance` of the fastest, so two paths that measure alike keep the
  same choice from one start to the next and the preferred (listed earlier, fp32 first) one wins.
- A candidate that cannot run here (package missing, no bf16 in this CPU) is skipped, logged.

The choice logic (`choose`) is pure; `select_denoiser` builds, times and keeps the winner only,
dropping the others' sessions before the service takes traffic. With a tuning cache
(`service.tuning`, `FEWSTEP_TUNING_CACHE`) the timings are taken once per machine and bundle, and
later starts build only the candidate they choose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from fewstep.bundle import Manifest
from service.backends.base import BackendError, BackendSettings, Denoiser, split_path
from service.tuning import TuningCache, bundle_identity

log = logging.getLogger(__name__)

ROUNDS = 3
# A round repeats a candidate's evaluation until this much time has passed and scores the mean: one
# evaluation was too short a sample on a shared CPU. And each candidate runs WARMUP_CALLS untimed
# first: OpenVINO's bf16 path measured 100 ms on its second call and 38 ms in steady state (the
# selection chose ONNX Runtime fp32 or OpenVINO fp32 over bf16 in 2 of 4 starts, BENCHMARKS.md).
MIN_ROUND_S = 0.15
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Candidate:
    kind: str
    precision: str

    @classmethod
    def parse(cls, name: str) -> Candidate:
        return cls(*split_path(name))

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.precision}"


@dataclass
class Selection:
    """What `select_denoiser` chose and why (logged, and kept on the pipeline for metrics)."""

    chosen: Candidate
    seconds: dict[Candidate, float] = field(default_factory=dict)
    refused: dict[Candidate, str] = field(default_factory=dict)
    reused: bool = False  # the timings came from the tuning cache (service.tuning), not this start

    def summary(self) -> str:
        timed = ", ".join(f"{c.label} {s * 1000:.1f} ms" for c, s in self.seconds.items())
        refused = "; ".join(f"{c.label}: {why}" for c, why in self.refused.items())
        source = "timed on this machine earlier, from the tuning cache" if self.reused else "timed"
        return f"chose {self.chosen.label} ({source}: {timed or 'none'}{'; skipped: ' + refused if refused else ''})"


def quality_allows(manifest: Manifest, c: Candidate) -> tuple[bool, str]:
    """Whether the bundle's measurement allows serving `c` (and why not, if it does not)."""
    if c.precision == "fp32":
        return True, ""
    check = manifest.reduced_precision.get(c.label)
    if check is None:
        measured = ", ".join(manifest.reduced_precision) or "none"
        return False, f"{c.label} was not measured on this bundle (measured: {measured}; python -m scripts.precision)"
    if not check.measured_graph_of(manifest):
        return False, f"{c.label} was measured on an earlier export's denoiser graph (python -m scripts.precision)"
    if not check.passed:
        return False, f"measured below the threshold: {check.why()}"
    return True, ""


def choose(seconds: dict[Candidate, float], order: Sequence[Candidate], tolerance: float = 0.05) -> Candidate:
    """The first candidate in `order` within `tolerance` of the fastest time (pure: tested with fakes)."""
    timed = [c for c in order if c in seconds]
    if not timed:
        raise BackendError("no backend candidate could be timed")
    fastest = min(seconds[c] for c in timed)
    return next(c for c in timed if seconds[c] <= fastest * (1 + tolerance))


def time_interleaved(
    runs: dict[Candidate, Callable[[], object]],
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    min_round_s: float = MIN_ROUND_S,
) -> dict[Candidate, float]:
    """Seconds per call of each candidate: the fastest of `rounds` rounds, the candidates taking
    turns (rotated order); a round calls its candidate until `min_round_s` passed and scores the mean."""
    best: dict[Candidate, float] = {}
    names = list(runs)
    for r in range(rounds):
        k = r % len(names)
        for c in names[k:] + names[:k]:
            t0, n = clock(), 0
            while True:
                runs[c]()
                n += 1
                elapsed = clock() - t0
                if elapsed >= min_round_s:
                    break
            dt = elapsed / n
            best[c] = min(best.get(c, dt), dt)
    return best


def select_denoiser(
    manifest: Manifest,
    settings: BackendSettings,
    build: Callable[[BackendSettings], Denoiser],
    inputs: Callable[[int], list[np.ndarray]],
    rounds: int = ROUNDS,
    clock: Callable[[], float] = time.perf_counter,
    warmup: int = WARMUP_CALLS,
    min_round_s: float = MIN_ROUND_S,
    tuning: TuningCache | None = None,
) -> tuple[Denoiser, Selection]:
    """Build every allowed candidate with `build`, time one evaluation at `auto_batch_images`
    images (doubled for a teacher's guidance, as the pipeline runs it), keep the winner.

    With a `tuning` cache holding this machine's timings of these candidates on this bundle, only
    the candidate those timings choose is built (no timing); a miss times them all and keeps the
    timings there."""
    order = [Candidate.parse(n) for n in settings.auto_candidates]
    refused: dict[Candidate, str] = {}
    allowed = []
    for c in order:
        ok, why = quality_allows(manifest, c)
        if ok:
            allowed.append(c)
        else:
            refused[c] = why
    images = settings.auto_batch_images * (1 if manifest.guidance.network_input else 2)
    fields = {
        "bundle": bundle_identity(manifest.files),
        "candidates": [c.label for c in allowed],
        "images": images,
        "backend": settings.model_dump(mode="json", include={"device", "threads", "max_batch"}),
        "timing": {"rounds": rounds, "warmup": warmup, "min_round_s": min_round_s},
    }
    cached = tuning.get("backend", fields) if tuning is not None else None
    if cached is not None:
        seconds = {Candidate.parse(k): float(v) for k, v in cached["seconds"].items()}
        chosen = choose(seconds, order, settings.auto_tolerance)
        try:
            den = build(settings.model_copy(update={"kind": chosen.kind, "precision": chosen.precision}))
        except BackendError as e:
            log.warning("%s: the cached choice %s cannot run now (%s): timing afresh", manifest.name, chosen.label, e)
        else:
            selection = Selection(chosen, seconds, refused, reused=True)
            log.info("%s: backend %s", manifest.name, selection.summary())
            return den, selection
    built: dict[Candidate, Denoiser] = {}
    for c in allowed:
        try:
            built[c] = build(settings.model_copy(update={"kind": c.kind, "precision": c.precision}))
        except BackendError as e:
            refused[c] = str(e)
    if not built:
        raise BackendError(
            "backend 'auto': no candidate can run here: " + "; ".join(f"{c.label}: {w}" for c, w in refused.items())
        )
    runs = {}
    for c, den in built.items():
        x = inputs(min(images, den.max_batch))
        w = x[4] if len(x) > 4 else None

        def run(den: Denoiser = den, x: list[np.ndarray] = x, w: np.ndarray | None = w) -> object:
            return den(x[0], x[1], x[2], x[3], w)

        for _ in range(warmup):  # warm: first calls' allocations and kernel compilation are not its speed
            run()
        runs[c] = run
    if len(runs) > 1:
        seconds = time_interleaved(runs, rounds=rounds, clock=clock, min_round_s=min_round_s)
        if tuning is not None:
            tuning.put("backend", fields, {"seconds": {c.label: s for c, s in seconds.items()}})
    else:
        seconds = {c: 0.0 for c in runs}
    chosen = choose(seconds, order, settings.auto_tolerance)
    selection = Selection(chosen, seconds, refused)
    log.info("%s: backend %s", manifest.name, selection.summary())
    return built[chosen], selection
