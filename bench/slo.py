"""`fewstep bench slo`: serving to a latency objective on a bursty trace, servers side by side.

Every server is the real engine (admission, queue, batching policy, scheduler, runner thread and
the latency controller) over the simulated denoiser of `bench.sim_server`: each model of the family
(the bundles named, by default the 8- and 4-step students) is served under its own name, step
counts, guidance and evaluation rows, but its denoiser sleeps `fixed + per_row x rows` per call
(the CPU's measured curve, or the H200's). Sleeping holds no CPU, so the cost curve is the one
asked for whatever else this machine runs. The servers run in one process, side by side, each on
its own runner thread, and get the same trace at the same instants:

- `fixed-8`: every request on the asked model (the 8-step student), quality `best`;
- `fixed-4`: every request on the cheapest model of the family (the 4-step student), `best`;
- `rule-xM`: a static threshold rule: the cheapest model whenever the images queued and running
  reach M x (objective x the asked model's capacity), the asked one otherwise (class-blind);
- `controller`: the latency controller, quality `auto` (`service.engine.slo`);
- `controller-reactive`: the same with `pressure_start = 1` (it moves a request only when the asked
  model is predicted late, whatever its prompt class): what the pricing of quality buys.

The trace (`bench.slo_trace`) is a two-state MMPP at several mean loads (a share of the asked
model's capacity, its images/s at its max batch from the warm-up profile), over one- and
two-object prompts. Latency counts from each request's scheduled arrival to its answer.

Served quality is **measured** by the scoring pass (`bench.slo_score`, unless `--no-score`): every
image a server answered with is rendered after the run on its serving model's real bundle (same
prompt, seed, steps and guidance; the service's pipeline) and scored by the evaluator. Beside it
stays the **prediction** the controller itself works from: each answered request scores the
adherence its serving model's evaluation row gives for its prompt class (the evaluator's figures
on the 2,000 evaluation prompts, carried in the bundles' manifests).

`dilation` D runs everything D times slower than the curve (sleeps, arrivals, objective) and
reports in the curve's time: the H200's rates are beyond what one Python process on two busy
cores can replay in real time, and the queueing is the same at any time scale.

With `--backend` (e.g. `torch --device cuda` on a lent GPU) the bundles themselves are served
instead of a curve: the pipelines are loaded once and the servers run one after another, each alone
on the device with the same trace (side by side they would share it).

    fewstep bench slo --curve cpu --objective-ms 1000 --out results/bench/slo_cpu
    fewstep bench slo --curve h200 --objective-ms 500 --dilation 5 --out results/bench/slo_h200
    fewstep bench slo --backend torch --device cuda --servers fixed-8 fixed-4 rule-x0.5 controller ...
    fewstep bench slo --curve cpu ... --no-score          # the timing-sensitive replay alone, then
    nice -n 10 fewstep bench slo --score-only --out ...   # the scoring pass at a low priority
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.defaults import STUDENT_K4, STUDENT_K8
from bench.server import machine
from bench.sim_server import parse_cost
from bench.slo_score import ScoreConfig
from bench.slo_trace import Arrival, Mmpp, make_trace, prompt_pools
from service.engine import DeadlineExceeded, Engine, EngineConfig, GenerateRequest, QueueFull, Routing
from service.engine.quality import prompt_class, quality_intervals, quality_rows
from service.engine.router import Router
from service.engine.slo import Backlog, Option, SloConfig
from service.engine.types import ResolvedRequest
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.tuning import TuningCache

log = logging.getLogger(__name__)

CURVES = {"cpu": "0,8.6", "h200": "14,0.09"}  # BENCHMARKS.md: the ONNX Runtime CPU profile; the H200's eager torch


@dataclass(frozen=True)
class SloBenchConfig:
    bundles: tuple[str, ...] = (f"bundles/{STUDENT_K8}", f"bundles/{STUDENT_K4}")  # the first is asked for
    curve: str = "cpu"  # a name of CURVES, or FIXED_MS,PER_ROW_MS
    objective_ms: float = 1000.0  # in the curve's time
    loads: tuple[float, ...] = (0.3, 0.6, 0.8, 1.0)  # mean load, share of the asked model's capacity
    seconds: float = 40.0  # trace length per load, curve time
    burst_ratio: float = 4.0
    burst_share: float = 0.25
    burst_s: float = 2.0  # mean burst length, curve time
    one_object_share: float = 0.5
    thresholds: tuple[float, ...] = (0.25, 0.5, 1.0)  # static rule: multiples of objective x capacity (images)
    dilation: float = 1.0
    max_batch_images: int | None = None  # None: from the warm-up profile, as `fewstep serve`
    scheduling: str = "request"
    headroom: float = SloConfig.headroom
    pressure_start: float = SloConfig.pressure_start
    profile_budget_s: float = 3.0  # the shared warm-up profile's budget per model (measured once; curve time)
    queue_limit_images: int = 256
    seed: int = 0
    servers: tuple[str, ...] = ()  # the servers to run (names of `servers`); empty: all
    backend: str | None = None  # serve the bundles on this backend ('torch', 'torch-bf16') instead of a curve
    device: str | None = None  # with `backend`: 'cpu' or 'cuda'

    def __post_init__(self) -> None:
        if self.backend and self.dilation != 1.0:
            raise ValueError("--dilation slows a simulated curve; a real backend runs at its own speed")
        if self.device and not self.backend:
            raise ValueError("--device needs --backend (without it the denoiser is a simulated curve)")

    @property
    def sequential(self) -> bool:
        """Servers one after another: a real backend's device cannot be shared fairly."""
        return self.backend is not None

    @property
    def cost_ms(self) -> tuple[float, float]:
        fixed, per_row = parse_cost(CURVES.get(self.curve, self.curve))
        return fixed * self.dilation, per_row * self.dilation

    @property
    def objective_s(self) -> float:
        """The objective in real (dilated) seconds."""
        return self.objective_ms / 1000 * self.dilation


@dataclass(frozen=True)
class ServerSpec:
    name: str
    model: str  # the model every request names
    quality: str = "auto"
    threshold_images: float | None = None  # the static rule
    pressure_start: float | None = None  # None: the config's
    recovery_s: float | None = None  # the controller's recovery half-life, curve time; None: its default


@dataclass
class Outcome:
    status: int  # 200, 429 or 504
    t: float  # arrival, curve time from the start of the trace
    latency_s: float  # curve time, from the scheduled arrival
    prompt_class: str
    burst: bool
    model: str | None = None
    steps: int | None = None
    reason: str | None = None
    predicted_s: float | None = None  # curve time
    prompt_id: int = -1  # the trace's prompt (`bench.slo_trace.Prompt.id`) and seed: what the scoring pass renders
    seed: int = 0
    guidance: float | None = None  # the serving model's (the request leaves it to the model)


# --- the simulated family ------------------------------------------------------------------------


def sim_family(bundles: tuple[str, ...], cost_ms: tuple[float, float]) -> list[Pipeline]:
    """Each bundle as a simulated pipeline: its name, steps, guidance, resolution and evaluation rows,
    over a denoiser sleeping the cost curve (`bench.sim_server`), with an identity for the tuning cache."""
    from fewstep.bundle import load_manifest
    from service.fakes import FakeDenoiser, fake_pipeline

    out = []
    for b in bundles:
        m = load_manifest(b, verify=False)
        fixed, per_row = cost_ms
        den = FakeDenoiser(max_batch=4096, delay_s=fixed / 1000, per_image_s=per_row / 1000)
        p = fake_pipeline(
            m.name, den, steps=sorted(m.steps), default_steps=m.default_steps, resolution=m.resolution,
            network_input=m.guidance.network_input, max_tokens=16, evaluation=m.evaluation,
        )  # fmt: skip
        p.manifest = p.manifest.model_copy(update={"guidance": m.guidance, "sampler": m.sampler})
        p.identity = {"bundle": f"sim:{m.name}", "path": f"sleep:{fixed:g},{per_row:g}", "backend": {}}
        out.append(p)
    return out


class ThresholdRouter(Router):
    """The static rule: the cheapest model whenever `threshold_images` images are queued or running."""

    def __init__(self, pipelines, config: SloConfig, cheap: Option, threshold_images: float, max_batch: int) -> None:
        super().__init__(pipelines, config, max_batch)
        self.cheap, self.threshold = cheap, threshold_images

    def route(self, request: GenerateRequest, resolved: ResolvedRequest, backlog: Backlog, now: float) -> Routing:
        asked = Option(resolved.model, resolved.steps)
        served = self.cheap if backlog.images >= self.threshold else asked
        return Routing(
            "auto", asked, served, "as_asked" if served == asked else "slo", prompt_class(resolved.prompt),
            objective_s=self.config.objective_s,
        )  # fmt: skip


# --- one load level ------------------------------------------------------------------------------


def real_family(cfg: SloBenchConfig) -> list[Pipeline]:
    """The bundles on `cfg.backend` (loaded once; the sequential servers share them)."""
    from bench.http import backend_fields
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline

    fields = backend_fields(cfg.backend, None)
    if cfg.device:
        fields["device"] = cfg.device
    settings = BackendSettings(**fields)  # type: ignore[arg-type]
    shared: dict = {}
    return [load_pipeline(b, settings, shared_text=shared) for b in cfg.bundles]


def engine_for(
    spec: ServerSpec, cfg: SloBenchConfig, tuning: TuningCache, cheap: Option, pipelines: list[Pipeline] | None = None
) -> Engine:
    """One server of the run: on `pipelines` (a real family) or on a fresh simulated one."""
    pipelines = pipelines if pipelines is not None else sim_family(cfg.bundles, cfg.cost_ms)
    slo = SloConfig(
        objective_s=cfg.objective_s,
        headroom=cfg.headroom,
        pressure_start=cfg.pressure_start if spec.pressure_start is None else spec.pressure_start,
        recovery_half_life_s=None if spec.recovery_s is None else spec.recovery_s * cfg.dilation,
    )
    config = EngineConfig(
        max_batch_images=cfg.max_batch_images or 8,
        max_wait_s=0.0,
        queue_limit_images=cfg.queue_limit_images,
        request_timeout_s=max(60.0, 20 * cfg.objective_s),
        profile_max_batch=cfg.max_batch_images is None,
        profile_budget_s=cfg.profile_budget_s * cfg.dilation,
        tuned_profile_budget_s=cfg.profile_budget_s * cfg.dilation,
        profile_settle_calls=2 if cfg.backend else 0,  # a sleep needs no settling; a runtime's new shapes do
        scheduling=cfg.scheduling,  # type: ignore[arg-type]
        slo=slo,
    )
    router = None
    if spec.threshold_images is not None:
        by_name = {p.name: p for p in pipelines}
        router = ThresholdRouter(by_name, slo, cheap, spec.threshold_images, config.max_batch_images)
    return Engine(pipelines, config, Metrics(), tuning=tuning, router=router)


async def _one(engine: Engine, spec: ServerSpec, a: Arrival, scheduled: float, dilation: float) -> Outcome:
    request = GenerateRequest(spec.model, a.prompt, a.seed, quality=None if spec.threshold_images else spec.quality)
    which = {"prompt_id": a.prompt_id, "seed": a.seed}
    try:
        r = await engine.generate(request)
    except QueueFull:
        return Outcome(429, a.t, (time.perf_counter() - scheduled) / dilation, a.prompt_class, a.burst, **which)
    except DeadlineExceeded:
        return Outcome(504, a.t, (time.perf_counter() - scheduled) / dilation, a.prompt_class, a.burst, **which)
    routing = r.routing
    assert routing is not None
    predicted = None if routing.predicted_s is None else routing.predicted_s / dilation
    return Outcome(
        200, a.t, (time.perf_counter() - scheduled) / dilation, a.prompt_class, a.burst, r.model, r.steps,
        routing.reason, predicted, guidance=r.guidance, **which,
    )  # fmt: skip


async def replay(engines: dict[str, tuple[Engine, ServerSpec]], trace: list[Arrival], dilation: float):
    """Every arrival to every server at its (dilated) time; {server: outcomes in trace order}."""
    tasks: dict[str, list[asyncio.Task[Outcome]]] = {name: [] for name in engines}
    start = time.perf_counter() + 0.05
    for a in trace:
        at = start + a.t * dilation
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        for name, (engine, spec) in engines.items():
            tasks[name].append(asyncio.create_task(_one(engine, spec, a, at, dilation)))
    return {name: list(await asyncio.gather(*ts)) for name, ts in tasks.items()}


def counted_downgrades(engine: Engine) -> int:
    """Downgrades the engine's own metrics counted (`fewstep_routing_total`, reason not as_asked)."""
    total = 0.0
    for family in engine.metrics.registry.collect():
        if family.name == "fewstep_routing":
            total += sum(
                s.value for s in family.samples if s.name.endswith("_total") and s.labels["reason"] != "as_asked"
            )
    return int(total)


async def run_load(
    cfg: SloBenchConfig,
    specs: list[ServerSpec],
    trace: list[Arrival],
    tuning: TuningCache,
    cheap: Option,
    pipelines: list[Pipeline] | None = None,
) -> dict[str, Any]:
    """The trace against every server: side by side (simulated), or one after another (`pipelines`)."""
    engines = {s.name: (engine_for(s, cfg, tuning, cheap, pipelines), s) for s in specs}
    groups = [[name] for name in engines] if cfg.sequential else [list(engines)]
    outcomes: dict[str, list[Outcome]] = {}
    for group in groups:
        running = {name: engines[name] for name in group}
        for engine, _ in running.values():
            await engine.start()
        await asyncio.gather(*(engine.warm_up() for engine, _ in running.values()))
        try:
            outcomes |= await replay(running, trace, cfg.dilation)
        finally:
            for engine, _ in running.values():
                await engine.stop(timeout_s=5.0)
    return {
        name: {
            "outcomes": [asdict(o) for o in outcomes[name]],
            "counted_downgrades": counted_downgrades(engine),
            "pressure_start": engine.router.config.pressure_start,
        }
        for name, (engine, _) in engines.items()
    }


# --- the run -------------------------------------------------------------------------------------

OUTCOMES = "outcomes.json.gz"  # every request's outcome, beside slo.json (which keeps the figures)


def save(doc: dict[str, Any], out: Path) -> None:
    """slo.json without the raw outcomes (megabytes at a GPU's rates), and the outcomes gzipped
    (times to 0.01 ms)."""

    def rounded(o: dict[str, Any]) -> dict[str, Any]:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in o.items()}

    loads = [
        {**e, "servers": {n: {**s, "outcomes": [rounded(o) for o in s["outcomes"]]} for n, s in e["servers"].items()}}
        for e in doc["loads"]
    ]
    (out / OUTCOMES).write_bytes(gzip.compress(json.dumps(loads, default=str).encode()))
    slim = {**doc, "loads": [
        {**e, "servers": {n: {k: v for k, v in s.items() if k != "outcomes"} for n, s in e["servers"].items()}}
        for e in doc["loads"]
    ]}  # fmt: skip
    tmp = out / "slo.json.tmp"
    tmp.write_text(json.dumps(slim, default=str, indent=1))
    tmp.replace(out / "slo.json")


def load(out: Path) -> dict[str, Any]:
    """A saved run with its outcomes back in place (`--report-only`)."""
    doc = json.loads((out / "slo.json").read_text())
    doc["loads"] = json.loads(gzip.decompress((out / OUTCOMES).read_bytes()))
    return doc


async def _profile(
    cfg: SloBenchConfig, tuning: TuningCache, pipelines: list[Pipeline] | None = None
) -> tuple[Engine, dict[str, Any]]:
    """One warm-up of the family: its profile (kept in the shared tuning cache) and bounds."""
    engine = engine_for(ServerSpec("profile", ""), cfg, tuning, Option("", 0), pipelines)
    await engine.start()
    await engine.warm_up()
    await engine.stop()
    profile = {
        name: {
            "steps": p.steps,
            "ms_per_batch": {b: s * 1000 / cfg.dilation for b, s in p.seconds.items()},
            "max_batch_images": engine.max_batch_images(name),
        }
        for name, p in engine.cost_profiles.items()
    }
    return engine, profile


def capacity(engine: Engine, model: str, dilation: float) -> float:
    """Images/s of `model` at its max batch and default steps, in curve time."""
    b = engine.max_batch_images(model)
    steps = engine.pipelines[model].manifest.default_steps
    seconds = engine.router.costs.seconds(model, steps, b)
    assert seconds is not None
    return b / seconds * dilation


def servers(cfg: SloBenchConfig, asked: str, cheap: str, cap: float) -> list[ServerSpec]:
    scale = cfg.objective_ms / 1000 * cap  # images the asked model clears within the objective
    return [
        ServerSpec("fixed-8", asked, "best"),
        ServerSpec("fixed-4", cheap, "best"),
        *(ServerSpec(f"rule-x{m:g}", asked, threshold_images=m * scale) for m in cfg.thresholds),
        ServerSpec("controller", asked, "auto"),
        ServerSpec("controller-reactive", asked, "auto", pressure_start=1.0),
    ]


def family_quality(cfg: SloBenchConfig) -> dict[str, Any]:
    """The rows the served quality is read from: {option: {class: adherence}} and their intervals."""
    from fewstep.bundle import load_manifest

    rows, intervals = {}, {}
    for b in cfg.bundles:
        m = load_manifest(b, verify=False)
        for k, q in quality_rows(m).items():
            rows[str(Option(m.name, k))] = q
        for k, ci in quality_intervals(m).items():
            intervals[str(Option(m.name, k))] = {c: list(v) for c, v in ci.items()}
    return {"adherence": rows, "adherence_ci": intervals}


def report(doc: dict[str, Any], out: Path, measured: bool = True) -> dict[str, Any]:
    """The figures (with the scoring pass's verdicts where `out` has them and `measured`), saved, and
    the plot."""
    from bench.slo_markdown import plot
    from bench.slo_report import analyse
    from bench.slo_score import load_scores

    doc["analysis"] = analyse(doc, load_scores(out) if measured else None)
    save(doc, out)
    try:
        plot(doc, out)
    except ImportError as e:  # a lent GPU machine may have no matplotlib: `--report-only` draws it here
        log.warning("no plot (%s): run `fewstep bench slo --report-only --out %s` where matplotlib is", e, out)
    return doc


def run_slo_bench(cfg: SloBenchConfig, out: Path, score: ScoreConfig | None = None) -> dict[str, Any]:
    """The simulated (or real) runs at every load, then, with `score`, the scoring pass over the
    images served (`bench.slo_score`), then the figures."""
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"config": asdict(cfg), "machine": machine(), "quality_rows": family_quality(cfg)}
    with tempfile.TemporaryDirectory() as scratch:
        tuning = TuningCache(Path(scratch) / "tuning.json")
        pipelines = real_family(cfg) if cfg.backend else None
        engine, profile = asyncio.run(_profile(cfg, tuning, pipelines))
        asked = engine.pipelines[next(iter(engine.pipelines))]
        cheapest = min(
            (p for p in engine.pipelines.values() if p.name != asked.name),
            key=lambda p: engine.router.costs.unit_seconds(p.name, p.manifest.default_steps) or 0.0,
        )
        cap = capacity(engine, asked.name, cfg.dilation)
        cheap = Option(cheapest.name, cheapest.manifest.default_steps)
        specs = servers(cfg, asked.name, cheapest.name, cap)
        if cfg.servers:
            unknown = set(cfg.servers) - {s.name for s in specs}
            if unknown:
                raise ValueError(f"--servers: no server {sorted(unknown)}; the servers are {[s.name for s in specs]}")
            specs = [s for s in specs if s.name in cfg.servers]
        doc.update(profile=profile, capacity_images_per_s=cap, asked=asked.name, cheap=str(cheap))
        doc["servers"] = [asdict(s) for s in specs]
        pools = prompt_pools(256, cfg.seed)
        doc["prompts"] = {"seed": cfg.seed, "captions": {p.id: p.caption for pool in pools.values() for p in pool}}
        doc["loads"] = []
        for load in cfg.loads:
            process = Mmpp(load * cap, cfg.burst_ratio, cfg.burst_share, cfg.burst_s)  # curve time
            trace = make_trace(process, cfg.seconds, cfg.one_object_share, pools, cfg.seed)  # the same bursts
            log.info("load %.2f: %d arrivals over %.0f s (curve time)", load, len(trace), cfg.seconds)
            t0 = time.perf_counter()
            results = asyncio.run(run_load(cfg, specs, trace, tuning, cheap, pipelines))
            entry = {"load": load, "arrivals": len(trace), "wall_s": time.perf_counter() - t0, "servers": results}
            doc["loads"].append(entry)
            save(doc, out)  # after every load: a run cut short keeps what it finished
    if score is not None:
        from bench.slo_score import score_run

        score_run(doc, out, score)
    # without a scoring pass, verdicts left in `out` by an earlier run stay there as a cache for
    # `--score-only`, but describe other outcomes: the figures are the predicted ones
    return report(doc, out, measured=score is not None)
