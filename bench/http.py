"""`fewstep bench http`: a real `fewstep serve` process under load, beside the raw sampler's limit.

One run measures, on the same machine state:

1. the raw sampler (`Pipeline.generate` in this process, the same bundles and backend settings)
   at batch sizes 1, 2, 4, ... for every (model, steps) of the request mix: its best images/s and
   its batch-1 images/s (measured before and after the HTTP phases; the medians of both rounds);
2. the server with profiled batcher bounds (the defaults): a closed-loop concurrency sweep, then
   open-loop Poisson arrivals at fractions of the capacity the sweep found;
3. the same server with fixed bounds (the former constants, 8 images and 10 ms) at the same
   Poisson rates, and with max batch 1 at the 32-client concurrency.

From these come the issue's ratios: HTTP saturated throughput over the raw best (target >= 0.9),
the server's batching gain (32 clients, dynamic against max batch 1) over the raw sampler's
(best batch against batch 1; target >= 0.9 of it), and p99 latency at 50% load over the
single-request latency (target <= 3). Every phase records images/s, latency percentiles, queue
wait, compute, the batch-size distribution (from the server's /metrics), statuses, the rejection
rate, and the CPU seconds of the client and of the server process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.defaults import STUDENT_K4, STUDENT_K8
from bench.http_report import mix_throughput, plot, ratios
from bench.load import (
    RequestClass,
    RequestMix,
    closed_loop,
    open_loop,
    shapes_prompts,
    summarize,
)
from bench.server import (
    ServerProcess,
    backend_seconds,
    batch_histogram,
    get,
    histogram_delta,
    machine,
    profiled_phase,
    warm_prompts,
)

log = logging.getLogger(__name__)

DEFAULT_MIX = (
    f"model={STUDENT_K4},steps=4,guidance=1.5|3|4.5,weight=1",
    f"model={STUDENT_K8},steps=8,guidance=1.5|3|4.5,weight=1",
)
FIXED_BOUNDS = {"max_batch_images": 8, "max_wait_s": 0.01}  # the constants the profile replaced


@dataclass(frozen=True)
class HttpBenchConfig:
    bundles: tuple[str, ...] = (f"bundles/{STUDENT_K4}", f"bundles/{STUDENT_K8}")
    mix: tuple[str, ...] = DEFAULT_MIX
    concurrency: tuple[int, ...] = (1, 4, 16, 32, 64)
    loads: tuple[float, ...] = (0.25, 0.5, 0.7, 0.9)
    compare_loads: tuple[float, ...] = (0.5, 0.9)
    closed_s: float = 10.0
    open_s: float = 15.0
    raw_batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    raw_min_s: float = 1.0
    prompts: int = 64
    threads: int | None = None
    backend: str | None = None  # 'auto', a kind ('onnxruntime') or a path ('openvino-bf16'); None = defaults
    seed: int = 0
    profile_budget_s: float | None = None  # the server's warm-up profile budget; None = its default
    gain_rounds: int = 2  # alternations of max batch 1 and profiled bounds at 32 clients
    py_spy_s: float = 0.0  # > 0: record the profiled server under 32 clients for this long (extra phase)
    host: str = "127.0.0.1"


# --- phases --------------------------------------------------------------------------------------


def run_phase(server: ServerProcess, mix: RequestMix, kind: str, level: float, seconds: float, seed: int = 0):
    """One load phase against `server`: summary + CPU + batch distribution."""
    scrape = asyncio.run(get(server.url, "/metrics"))[1].decode()
    before, busy0 = batch_histogram(scrape), backend_seconds(scrape)
    cpu_client0, cpu_server0 = time.process_time(), server.cpu_s()
    if kind == "closed":
        outcomes, wall = asyncio.run(closed_loop(server.url, mix, int(level), seconds))
    else:
        outcomes, wall = asyncio.run(open_loop(server.url, mix, level, seconds, seed=seed))
    cpu_client, cpu_server = time.process_time() - cpu_client0, server.cpu_s() - cpu_server0
    scrape = asyncio.run(get(server.url, "/metrics"))[1].decode()
    after, busy = batch_histogram(scrape), backend_seconds(scrape) - busy0
    row = summarize(outcomes, wall, mix)
    row.update(
        kind=kind,
        level=level,
        batches=histogram_delta(before, after),
        backend_busy=busy / wall if wall else None,  # share of the phase the backend was computing
        cpu={
            "client_s": cpu_client,
            "server_s": cpu_server,
            "client_cores": cpu_client / wall,
            "server_cores": cpu_server / wall,
            "client_share": cpu_client / (cpu_client + cpu_server) if cpu_client + cpu_server else 0.0,
            "client_ms_per_request": 1000 * cpu_client / max(1, row["requests"]),
        },
    )
    lat = row["latency_s"]
    log.info(
        "%s %g: %.1f images/s, p50 %.0f ms, p99 %.0f ms, %s, client %.0f%% of a core",
        kind,
        level,
        row["images_per_s"],
        1000 * (lat["p50"] or 0),
        1000 * (lat["p99"] or 0),
        row["statuses"],
        100 * row["cpu"]["client_cores"],
    )
    return row


def backend_fields(backend: str | None, threads: int | None) -> dict[str, object]:
    """`BackendSettings` fields (and so FEWSTEP_BACKEND__* variables) for the server and the raw
    sampler alike: 'auto' or a kind pins the kind (precision from the bundle), 'kind-precision'
    pins both, None keeps the defaults."""
    from service.backends.base import split_path

    fields: dict[str, object] = {}
    if backend and "-" in backend:
        fields["kind"], fields["precision"] = split_path(backend)
    elif backend:
        fields["kind"] = backend
    if threads:
        fields["threads"] = threads
    return fields


# --- the raw sampler -----------------------------------------------------------------------------


def raw_sampler(
    cfg: HttpBenchConfig, classes: Sequence[RequestClass], prompts: Sequence[str], pipelines=None
) -> tuple[dict[str, dict[int, float]], Any]:
    """images/s of `Pipeline.generate` per (model, steps) and batch size, in this process."""
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    if pipelines is None:
        settings = BackendSettings(**backend_fields(cfg.backend, cfg.threads))
        pipelines, shared_text = {}, {}  # as the server loads them: identical text encoders shared
        for b in cfg.bundles:
            p = load_pipeline(b, settings, shared_text=shared_text)
            p.prompts(list(prompts))  # the server's prompt cache is warm too after the first pass
            pipelines[p.name] = p
    out: dict[str, dict[int, float]] = {}
    for c in classes:
        p = pipelines[c.model] if c.model else next(iter(pipelines.values()))
        steps = c.steps or p.manifest.default_steps
        w = c.guidance[len(c.guidance) // 2] if c.guidance else p.manifest.guidance.default
        key = f"{p.name}@{steps}"
        if key in out:
            continue
        out[key] = {}
        for b in cfg.raw_batches:
            jobs = [ImageJob(prompts[i % len(prompts)], i, steps, w) for i in range(b)]
            p.generate(jobs)
            times, spent = [], 0.0
            while len(times) < 3 or spent < cfg.raw_min_s:
                t0 = time.perf_counter()
                p.generate(jobs)
                times.append(time.perf_counter() - t0)
                spent += times[-1]
                if len(times) >= 50:
                    break
            out[key][b] = b / statistics.median(times)
        log.info("raw %s: %s", key, {b: round(v, 1) for b, v in out[key].items()})
    return out, pipelines


def _mix_keys(pipelines, classes: Sequence[RequestClass]) -> list[tuple[str, Any, int, float]]:
    """(key, pipeline, steps, guidance) of each distinct (model, steps) of the mix, in mix order."""
    out: dict[str, tuple[str, Any, int, float]] = {}
    for c in classes:
        p = pipelines[c.model] if c.model else next(iter(pipelines.values()))
        steps = c.steps or p.manifest.default_steps
        w = c.guidance[len(c.guidance) // 2] if c.guidance else p.manifest.guidance.default
        out.setdefault(f"{p.name}@{steps}", (f"{p.name}@{steps}", p, steps, w))
    return list(out.values())


def raw_phase(
    pipelines, classes: Sequence[RequestClass], prompts: Sequence[str], batch: dict[str, int], seconds: float
) -> dict[str, Any]:
    """The raw sampler run back to back for `seconds` (split over the mix's keys, each at its batch size)."""
    from service.pipeline import ImageJob

    keys = _mix_keys(pipelines, classes)
    per_key: dict[str, float] = {}
    for key, p, steps, w in keys:
        b, images, i = batch[key], 0, 0
        t0 = time.perf_counter()
        end = t0 + seconds / len(keys)
        while time.perf_counter() < end:
            p.generate([ImageJob(prompts[(i + j) % len(prompts)], i + j, steps, w) for j in range(b)])
            images, i = images + b, i + b
        per_key[key] = images / (time.perf_counter() - t0)
    row = {"batch": batch, "per_key": per_key, "images_per_s": mix_throughput(per_key, classes, keys[0][0])}
    log.info("raw at %s: %.1f images/s %s", batch, row["images_per_s"], {k: round(v, 1) for k, v in per_key.items()})
    return row


# --- the run -------------------------------------------------------------------------------------


def run_http_bench(cfg: HttpBenchConfig, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [RequestClass.parse(s) for s in cfg.mix]
    prompts = shapes_prompts(cfg.prompts, cfg.seed)
    doc: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": machine(),
        "started": time.strftime("%FT%TZ", time.gmtime()),
    }
    env = {"FEWSTEP_BATCH_PROFILE_BUDGET_S": str(cfg.profile_budget_s)} if cfg.profile_budget_s else {}
    env |= {f"FEWSTEP_BACKEND__{k.upper()}": str(v) for k, v in backend_fields(cfg.backend, cfg.threads).items()}

    def mix(seed_offset: int) -> RequestMix:
        return RequestMix(classes, prompts, seed=cfg.seed + seed_offset)

    log.info("raw sampler, first round")
    raw1, pipes = raw_sampler(cfg, classes, prompts)
    doc["raw_backends"] = {name: p.backend for name, p in pipes.items()}

    # All three servers stay up (an idle one costs no CPU) so that the phases compared with each
    # other run back to back, in the same machine state; they start one after another so that the
    # profiled server's warm-up profile has the machine to itself.
    with contextlib.ExitStack() as stack:
        prof = stack.enter_context(ServerProcess(cfg.bundles, out_dir / "serve-profiled.log", env))
        fixed = stack.enter_context(ServerProcess(cfg.bundles, out_dir / "serve-fixed.log", env, **FIXED_BOUNDS))
        batch1 = stack.enter_context(
            ServerProcess(cfg.bundles, out_dir / "serve-batch1.log", env, max_batch_images=1, max_wait_s=0)
        )
        doc["batch_profiles"] = prof.batch_profiles()
        for server in (prof, fixed, batch1):  # every prompt of the mix once per model: warm prompt caches
            asyncio.run(warm_prompts(server.url, classes, prompts))

        # closed-loop sweep, then 32 clients alternating max batch 1 and profiled bounds
        closed = [run_phase(prof, mix(i), "closed", c, cfg.closed_s) for i, c in enumerate(cfg.concurrency)]
        # then, alternated in rounds: the raw sampler at batch 1 and at its best batch (from the sweep),
        # the server with max batch 1 and with profiled bounds at 32 clients (each phase closed_s long)
        best = {k: max(v, key=v.get) for k, v in raw1.items()}
        ones = dict.fromkeys(best, 1)
        saturated, single, raw_best, raw_one = [], [], [], []
        for r in range(cfg.gain_rounds):
            raw_one.append(raw_phase(pipes, classes, prompts, ones, cfg.closed_s))
            raw_best.append(raw_phase(pipes, classes, prompts, best, cfg.closed_s))
            single.append(run_phase(batch1, mix(200 + r), "closed", 32, cfg.closed_s))
            saturated.append(run_phase(prof, mix(200 + r), "closed", 32, cfg.closed_s))
        full = [row["images_per_s"] for row in closed if row["level"] >= 16] + [x["images_per_s"] for x in saturated]
        capacity = statistics.median(full)

        # Poisson arrivals at fractions of that capacity; fixed bounds right beside the profiled ones
        per_request = mix(0).images_per_request()
        poisson, fixed_open = [], []
        for i, f in enumerate(sorted(set(cfg.loads) | set(cfg.compare_loads))):
            rate = f * capacity / per_request
            order = [(prof, poisson)] if f in cfg.loads else []
            if f in cfg.compare_loads:
                order = [*order, (fixed, fixed_open)] if i % 2 == 0 else [(fixed, fixed_open), *order]
            for server, rows in order:
                rows.append(run_phase(server, mix(100 + i), "open", rate, cfg.open_s, seed=cfg.seed + i) | {"load": f})

        if cfg.py_spy_s > 0:
            spied = profiled_phase(
                prof,
                cfg.py_spy_s,
                out_dir / "http-server-stacks.txt",
                lambda: run_phase(prof, mix(7), "closed", 32, cfg.py_spy_s),
            )
            if "samples" in spied:  # py-spy was there
                doc["server_profile"] = spied
    doc["profiled"] = {"closed": closed, "saturated": saturated, "open": poisson, "capacity_images_per_s": capacity}
    doc["fixed"] = {"bounds": FIXED_BOUNDS, "open": fixed_open}
    doc["batch1"] = {"closed": single}

    log.info("raw sampler, second round")
    raw2, _ = raw_sampler(cfg, classes, prompts, pipes)
    doc["raw"] = {"rounds": [raw1, raw2], "best": raw_best, "batch1": raw_one}
    doc["ratios"] = ratios(doc, classes)
    doc["finished"] = time.strftime("%FT%TZ", time.gmtime())
    doc["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (out_dir / "http.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    plot(doc, out_dir)
    return doc
