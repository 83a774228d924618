"""`fewstep bench soak`: a real `fewstep serve` under steady load for a long time (30 minutes at 70%
of its capacity by default), watched for what short benchmarks cannot see: memory that grows,
latency that drifts, errors that appear late.

1. Start the server (`bench.server.ServerProcess`, the bundles and settings `make serve` uses),
   warm its prompt caches, and measure its capacity: closed-loop clients at a concurrency that
   saturates it (`bench.load.closed_loop`), images/s. `--rate` skips this and gives the rate.
2. Poisson arrivals (`bench.load.open_loop`, no coordinated omission) at `load` x capacity for the
   whole duration, while a monitor samples the server's resident memory (VmRSS, /proc) and CPU
   time every `sample_s`.
3. Figures per window (5 minutes by default), by arrival time: requests, errors by status, images/s,
   latency p50/p95/p99, the RSS at the window's end; then the drift (last window against the
   first), the RSS growth after the first window (warm-up allocations and caches filling are the
   first window's) and its least-squares slope per hour, the server's own rejection counters.

The checks at the end are rules of thumb, stated in `SoakChecks`, not service guarantees: memory
that keeps growing past the first window, a p99 that ends more than 1.5 times where it began, any
error at 70% load. `results/soak/<machine>.json` keeps every figure (and every latency, so windows
can be cut again); `<machine>.md` is the table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.defaults import STUDENT_K4, STUDENT_K8
from bench.load import Outcome, RequestClass, RequestMix, closed_loop, open_loop, percentile, shapes_prompts
from bench.server import ServerProcess, get, machine, proc_cpu_s, warm_prompts

log = logging.getLogger(__name__)

DEFAULT_MIX = (
    f"model={STUDENT_K4},steps=4,guidance=1.5|3|4.5,weight=1",
    f"model={STUDENT_K8},steps=8,guidance=1.5|3|4.5,weight=1",
)
REJECTIONS = "fewstep_requests_rejected_total"
BATCH_FAILURES = "fewstep_batch_failures_total"


@dataclass(frozen=True)
class SoakChecks:
    """Rules of thumb the report marks (not guarantees): growth after the first window, drift, errors."""

    max_rss_slope_mb_per_hour: float = 50.0
    max_rss_growth_mb: float = 100.0
    max_p99_drift: float = 1.5
    max_error_rate: float = 0.0


@dataclass(frozen=True)
class SoakConfig:
    bundles: tuple[str, ...] = ("bundles",)
    mix: tuple[str, ...] = DEFAULT_MIX
    minutes: float = 30.0
    load: float = 0.7  # share of the measured capacity
    rate: float | None = None  # requests/s; None = load x the measured capacity
    window_s: float = 300.0
    sample_s: float = 10.0
    capacity_clients: int = 32
    capacity_s: float = 60.0
    prompts: int = 64
    seed: int = 0
    threads: int | None = None
    backend: str | None = "auto"  # as `make serve`; or a kind, or "kind-precision" (`fewstep bench http --backend`)
    env: dict[str, str] = field(default_factory=dict)  # more FEWSTEP_* settings for the server
    checks: SoakChecks = field(default_factory=SoakChecks)

    def __post_init__(self) -> None:
        if self.minutes <= 0 or self.window_s <= 0 or self.sample_s <= 0:
            raise ValueError("minutes, window_s and sample_s must be > 0")
        if self.window_s > 60 * self.minutes:
            raise ValueError(f"a window ({self.window_s:g} s) longer than the soak ({self.minutes:g} min)")
        if not 0 < self.load <= 1.5:
            raise ValueError(f"load {self.load} is a share of capacity: use (0, 1.5]")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0 requests/s")


class Served(Protocol):
    """What the soak drives: a server's address and its process id (for RSS and CPU)."""

    url: str

    @property
    def pid(self) -> int: ...


@dataclass
class Sample:
    t_s: float  # since the load began
    rss_mb: float
    cpu_s: float


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (VmRSS, Linux /proc)."""
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+)\s+kB", text, re.M)
    if not found:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(found.group(1)) / 1024


def counters(metrics_text: str) -> dict[str, float]:
    """The server's rejection (by reason) and batch-failure counters from a /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(metrics_text):
        for s in fam.samples:
            if s.name == REJECTIONS:
                out[f"rejected:{s.labels.get('reason', '')}"] = s.value
            elif s.name == BATCH_FAILURES:
                out["batch_failures"] = out.get("batch_failures", 0.0) + s.value
    return out


async def monitor(pid: int, every_s: float, begin: float, stop: asyncio.Event) -> list[Sample]:
    """RSS and CPU of `pid` every `every_s` until `stop` is set (and once more then)."""
    samples: list[Sample] = []
    while True:
        samples.append(Sample(time.perf_counter() - begin, rss_mb(pid), proc_cpu_s(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            continue
        samples.append(Sample(time.perf_counter() - begin, rss_mb(pid), proc_cpu_s(pid)))
        return samples


async def soak_phase(
    server: Served, mix: RequestMix, rate: float, seconds: float, sample_s: float, seed: int
) -> tuple[list[Outcome], list[Sample], float]:
    """Poisson arrivals for `seconds` beside the monitor: (outcomes, samples, begin perf_counter)."""
    begin = time.perf_counter()
    stop = asyncio.Event()
    watch = asyncio.create_task(monitor(server.pid, sample_s, begin, stop))
    outcomes, _ = await open_loop(server.url, mix, rate, seconds, seed=seed)
    stop.set()
    return outcomes, await watch, begin


def windows(
    outcomes: Sequence[Outcome], samples: Sequence[Sample], begin: float, window_s: float, seconds: float
) -> list[dict[str, Any]]:
    """Figures per window of arrival time. A last, shorter window holding under a fifth of a window
    joins the one before it (too few requests for a p99 of its own)."""
    full, rest = int(seconds // window_s), seconds % window_s
    n = full + 1 if rest >= 0.2 * window_s or full == 0 else full
    groups: list[list[Outcome]] = [[] for _ in range(n)]
    for o in outcomes:
        groups[min(n - 1, max(0, int((o.start - begin) // window_s)))].append(o)
    rows = []
    for w, inside in enumerate(groups):
        lo, hi = w * window_s, (seconds if w == n - 1 else (w + 1) * window_s)
        ok = [o for o in inside if o.status == 200]
        lat = [o.latency_s for o in ok]
        seen = [s for s in samples if s.t_s <= hi]
        rows.append(
            {
                "window": w,
                "start_s": lo,
                "end_s": hi,
                "requests": len(inside),
                "ok": len(ok),
                "errors": len(inside) - len(ok),
                "statuses": {str(k): v for k, v in sorted(Counter(o.status for o in inside).items())},
                "images_per_s": sum(o.images for o in ok) / (hi - lo) if hi > lo else 0.0,
                "latency_s": {f"p{q}": percentile(lat, q) for q in (50, 95, 99)},
                "rss_mb": seen[-1].rss_mb if seen else None,
            }
        )
    return rows


def rss_trend(samples: Sequence[Sample], after_s: float) -> dict[str, float | None]:
    """RSS at the start, the peak, and after `after_s` (the first window): growth from there to the
    end and the least-squares slope per hour over those samples."""
    if not samples:
        return {"start_mb": None, "end_mb": None, "peak_mb": None, "growth_mb": None, "slope_mb_per_hour": None}
    later = [s for s in samples if s.t_s >= after_s] or [samples[-1]]
    slope = None
    if len(later) >= 3:
        mt = sum(s.t_s for s in later) / len(later)
        mr = sum(s.rss_mb for s in later) / len(later)
        var = sum((s.t_s - mt) ** 2 for s in later)
        if var > 0:
            slope = 3600 * sum((s.t_s - mt) * (s.rss_mb - mr) for s in later) / var
    return {
        "start_mb": samples[0].rss_mb,
        "after_first_window_mb": later[0].rss_mb,
        "end_mb": samples[-1].rss_mb,
        "peak_mb": max(s.rss_mb for s in samples),
        "growth_mb": samples[-1].rss_mb - later[0].rss_mb,
        "slope_mb_per_hour": slope,
    }


def verdict(doc: dict[str, Any], checks: SoakChecks) -> dict[str, Any]:
    """Each rule of `checks` against the figures: {name: {value, limit, ok}}."""
    rows, rss = doc["windows"], doc["rss"]
    first, last = rows[0]["latency_s"]["p99"], rows[-1]["latency_s"]["p99"]
    drift = last / first if first and last else None
    total = sum(r["requests"] for r in rows)
    errors = sum(r["errors"] for r in rows)
    error_rate = errors / total if total else None
    # one window leaves no later samples to fit a slope to: the growth alone then
    slope, growth = rss.get("slope_mb_per_hour"), rss.get("growth_mb")

    def row(value: float | None, limit: float) -> dict[str, Any]:
        return {"value": value, "limit": limit, "ok": value is not None and value <= limit}

    out = {
        "rss_growth_mb": row(growth, checks.max_rss_growth_mb),
        "p99_drift": row(drift, checks.max_p99_drift),
        "error_rate": row(error_rate, checks.max_error_rate),
    }
    if slope is not None:
        out["rss_slope_mb_per_hour"] = row(slope, checks.max_rss_slope_mb_per_hour)
    return out


def measure_capacity(server: Served, mix: RequestMix, clients: int, seconds: float) -> dict[str, Any]:
    """Images/s with `clients` closed-loop clients (enough to keep the batcher full)."""
    outcomes, wall = asyncio.run(closed_loop(server.url, mix, clients, seconds))
    ok = [o for o in outcomes if o.status == 200]
    return {
        "clients": clients,
        "seconds": wall,
        "requests": len(outcomes),
        "ok": len(ok),
        "images_per_s": sum(o.images for o in ok) / wall if wall else 0.0,
        "latency_p50_s": percentile([o.latency_s for o in ok], 50),
    }


def run_soak(cfg: SoakConfig, server: Served, out_json: Path | None = None) -> dict[str, Any]:
    """The soak against a started `server`: capacity (unless `cfg.rate`), then the long phase."""
    classes = [RequestClass.parse(s) for s in cfg.mix]
    prompts = shapes_prompts(cfg.prompts, cfg.seed)
    mix = RequestMix(classes, prompts, seed=cfg.seed)
    doc: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": machine(),
        "started": time.strftime("%FT%TZ", time.gmtime()),
    }
    asyncio.run(warm_prompts(server.url, classes, prompts))
    per_request = mix.images_per_request()
    if cfg.rate is None:
        log.info("capacity: %d closed-loop clients for %.0f s", cfg.capacity_clients, cfg.capacity_s)
        capacity = measure_capacity(
            server, RequestMix(classes, prompts, seed=cfg.seed + 1), cfg.capacity_clients, cfg.capacity_s
        )
        doc["capacity"] = capacity
        rate = cfg.load * capacity["images_per_s"] / per_request
        if rate <= 0:
            raise RuntimeError(f"the server answered nothing in the capacity phase: {capacity}")
    else:
        rate = cfg.rate
    doc["rate_requests_per_s"] = rate
    doc["rate_images_per_s"] = rate * per_request
    seconds = 60 * cfg.minutes
    before = counters(asyncio.run(get(server.url, "/metrics"))[1].decode())
    log.info("soak: %.2f requests/s (%.2f images/s) for %.1f min", rate, rate * per_request, cfg.minutes)
    cpu_client0 = time.process_time()
    outcomes, samples, begin = asyncio.run(
        soak_phase(server, RequestMix(classes, prompts, seed=cfg.seed + 2), rate, seconds, cfg.sample_s, cfg.seed)
    )
    after = counters(asyncio.run(get(server.url, "/metrics"))[1].decode())
    doc["client_cpu_s"] = time.process_time() - cpu_client0
    doc["windows"] = windows(outcomes, samples, begin, cfg.window_s, seconds)
    doc["rss"] = rss_trend(samples, cfg.window_s)
    doc["server_cpu_cores"] = (samples[-1].cpu_s - samples[0].cpu_s) / (samples[-1].t_s - samples[0].t_s or 1)
    doc["server_counters"] = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(after) | set(before))}
    doc["samples"] = [asdict(s) for s in samples]
    doc["latencies"] = [[round(o.start - begin, 3), o.status, round(o.latency_s, 5)] for o in outcomes]
    doc["checks"] = verdict(doc, cfg.checks)
    doc["finished"] = time.strftime("%FT%TZ", time.gmtime())
    doc["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def soak(cfg: SoakConfig, out_dir: Path, machine_name: str | None = None, command: str = "") -> dict[str, Any]:
    """Start `fewstep serve` on `cfg.bundles`, soak it, write `<machine>.json` and `.md` in `out_dir`."""
    from bench.http import backend_fields

    name = machine_name or machine_slug()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {f"FEWSTEP_BACKEND__{k.upper()}": str(v) for k, v in backend_fields(cfg.backend, cfg.threads).items()}
    env |= cfg.env
    with ServerProcess(cfg.bundles, out_dir / f"{name}-serve.log", env) as server:
        doc = run_soak(cfg, Started(server.url, server.proc.pid if server.proc else 0))
    doc["machine"]["name"] = name
    doc["command"] = command or "fewstep bench soak"
    doc["server_log"] = str(out_dir / f"{name}-serve.log")
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(doc))
    return doc


@dataclass
class Started:
    """A server started elsewhere (tests: the fault server over fake pipelines)."""

    url: str
    pid: int


def machine_slug() -> str:
    """A file name for this machine: its CPU model and core count, e.g. 'amd-epyc-7b13-2c'."""
    m = machine()
    words = re.sub(r"\(R\)|\(TM\)|CPU|Processor|@.*$|\d+-Core", " ", m["cpu"] or "cpu")
    slug = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-") or "cpu"
    return f"{slug}-{m['cores']}c"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{1000 * value:.0f}"


def markdown(doc: dict[str, Any]) -> str:
    """The soak's table and its checks."""
    cfg, m = doc["config"], doc["machine"]
    lines = [
        f"# Soak: {m.get('name', '')}",
        "",
        f"{m['cpu']}, {m['cores']} cores (load average at start {m['loadavg_at_start']}, at end "
        f"{m.get('loadavg_at_end')}); {doc['started']} to {doc.get('finished')}.",
        f"Bundles {', '.join(cfg['bundles'])}; mix {'; '.join(cfg['mix'])}; backend {cfg['backend'] or 'default'}.",
        "",
    ]
    if "capacity" in doc:
        c = doc["capacity"]
        lines.append(
            f"Capacity: {c['images_per_s']:.1f} images/s ({c['clients']} closed-loop clients, {c['seconds']:.0f} s). "
            f"Load: {cfg['load']:.0%} of it, {doc['rate_requests_per_s']:.2f} requests/s "
            f"({doc['rate_images_per_s']:.1f} images/s), Poisson, for {cfg['minutes']:g} minutes."
        )
    else:
        lines.append(f"Load: {doc['rate_requests_per_s']:.2f} requests/s (given), for {cfg['minutes']:g} minutes.")
    lines += [
        "",
        "| window | requests | errors | images/s | p50 ms | p95 ms | p99 ms | RSS at end (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in doc["windows"]:
        lat = r["latency_s"]
        errors = str(r["errors"]) if not r["errors"] else f"{r['errors']} ({r['statuses']})"
        rss = "-" if r["rss_mb"] is None else f"{r['rss_mb']:.0f}"
        lines.append(
            f"| {r['start_s'] / 60:.3g}-{r['end_s'] / 60:.3g} min | {r['requests']} | {errors} "
            f"| {r['images_per_s']:.1f} "
            f"| {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['p99'])} | {rss} |"
        )
    rss = doc["rss"]
    slope = rss.get("slope_mb_per_hour")
    counted = ", ".join(f"{k} {v:g}" for k, v in doc["server_counters"].items() if v)
    lines += [
        "",
        f"RSS: {rss['start_mb']:.0f} MiB when the load began, {rss['after_first_window_mb']:.0f} MiB after the first "
        f"window, {rss['end_mb']:.0f} MiB at the end (peak {rss['peak_mb']:.0f}); growth after the first window "
        f"{rss['growth_mb']:+.1f} MiB" + (f", slope {slope:+.1f} MiB/hour." if slope is not None else "."),
        f"Server CPU {doc['server_cpu_cores']:.2f} cores; client CPU {doc['client_cpu_s']:.0f} s in all.",
        "Server counters over the soak: " + (counted or "no rejections, no failed batches") + ".",
        "",
        "| check (rule of thumb) | value | limit | |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, c in doc["checks"].items():
        value = "-" if c["value"] is None else f"{c['value']:.3g}"
        lines.append(f"| {name} | {value} | {c['limit']:g} | {'ok' if c['ok'] else 'LOOK'} |")
    lines += ["", f"Command: `{doc.get('command', 'fewstep bench soak')}`", ""]
    return "\n".join(lines)
