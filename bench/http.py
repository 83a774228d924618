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
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.load import (
    Pool,
    RequestClass,
    RequestMix,
    closed_loop,
    fifo_p99,
    open_loop,
    shapes_prompts,
    summarize,
)

log = logging.getLogger(__name__)

DEFAULT_MIX = (
    "model=mm-alt-k4,steps=4,guidance=1.5|3|4.5,weight=1",
    "model=mm-alt-k8,steps=8,guidance=1.5|3|4.5,weight=1",
)
FIXED_BOUNDS = {"max_batch_images": 8, "max_wait_s": 0.01}  # the constants the profile replaced
PROFILE_LINE = re.compile(
    r"batch profile (?P<model>\S+) at (?P<steps>\d+) steps \(ms per batch: (?P<ms>[^)]*)\): gain (?P<gain>[\d.]+); "
    r"max_batch_images (?P<max_batch>\d+), max_wait_s (?P<max_wait>[\d.]+)"
)


@dataclass(frozen=True)
class HttpBenchConfig:
    bundles: tuple[str, ...] = ("bundles/mm-alt-k4", "bundles/mm-alt-k8")
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
    seed: int = 0
    profile_budget_s: float | None = None  # the server's warm-up profile budget; None = its default
    gain_rounds: int = 2  # alternations of max batch 1 and profiled bounds at 32 clients
    py_spy_s: float = 0.0  # > 0: record the profiled server under 32 clients for this long (extra phase)
    host: str = "127.0.0.1"


# --- CPU accounting ------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with _suppress():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load]}


@contextmanager
def _suppress() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


# --- the server process --------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """`fewstep serve` in a subprocess, ready when /readyz answers 200."""

    def __init__(self, bundles: Sequence[str], log_path: Path, env: dict[str, str] | None = None, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "fewstep", "serve", "--bundles", *bundles, "--port", str(self.port)]
        for key, value in settings.items():
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        self.cmd = cmd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"fewstep serve exited with {self.proc.returncode}; see {self.log_path}")
            with _suppress():
                if asyncio.run(get(self.url, "/readyz"))[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"fewstep serve not ready after {timeout_s} s; see {self.log_path}")

    def cpu_s(self) -> float:
        assert self.proc is not None
        return proc_cpu_s(self.proc.pid)

    def batch_profiles(self) -> list[dict[str, Any]]:
        """The warm-up cost profiles the server logged (empty with fixed bounds)."""
        rows = []
        for m in PROFILE_LINE.finditer(self.log_path.read_text()):
            ms = {int(b): float(v) for b, v in (p.split(": ") for p in m["ms"].split(", "))}
            rows.append(
                {
                    "model": m["model"],
                    "steps": int(m["steps"]),
                    "ms_per_batch": ms,
                    "gain": float(m["gain"]),
                    "max_batch_images": int(m["max_batch"]),
                    "max_wait_s": float(m["max_wait"]),
                }
            )
        return rows

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the drain path: admission closes, then a clean exit
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def get(url: str, path: str) -> tuple[int, bytes]:
    pool = Pool(url)
    try:
        status, _, body = await pool.request("GET", path)
        return status, body
    finally:
        pool.close()


def batch_histogram(metrics_text: str) -> dict[str, dict[str, float]]:
    """Per model: cumulative bucket counts of fewstep_batch_size_images, plus its sum and count."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name != "fewstep_batch_size_images":
            continue
        for s in fam.samples:
            model = s.labels.get("model", "")
            row = out.setdefault(model, {})
            if s.name.endswith("_bucket"):
                row[s.labels["le"]] = s.value
            elif s.name.endswith("_sum"):
                row["sum"] = s.value
            elif s.name.endswith("_count"):
                row["count"] = s.value
    return out


def histogram_delta(before: dict, after: dict) -> dict[str, Any]:
    """Batches per size bucket (non-cumulative) and the mean batch size, per model, between two scrapes."""
    out = {}
    for model, row in after.items():
        prev = before.get(model, {})
        d = {k: v - prev.get(k, 0.0) for k, v in row.items()}
        if not d.get("count"):
            continue
        les = sorted((k for k in d if k not in ("sum", "count")), key=lambda k: float(k))
        buckets, last = {}, 0.0
        for le in les:
            n = d[le] - last
            last = d[le]
            if n:
                buckets[le] = int(n)
        out[model] = {"batches": int(d["count"]), "mean_images": d["sum"] / d["count"], "by_le": buckets}
    return out


# --- where the server's time goes (py-spy) -----------------------------------------------------

# A stack that runs a graph is the text encoder's or the denoiser's, whatever called it; any other
# stack goes to the category of its innermost frame that matches one.
GRAPH_CATEGORIES = (("text encoder (ORT)", ("service/text.py",)), ("denoiser (ORT run)", ("onnxruntime",)))
FRAME_CATEGORIES = (
    ("sampler maths (numpy)", ("fewstep/", "service/pipeline.py", "numpy")),
    ("image encoding (PNG)", ("encode.py", "PIL")),
    ("metrics", ("prometheus_client",)),
    (
        "HTTP + routing (uvicorn, starlette, fastapi, pydantic)",
        ("uvicorn", "h11", "httptools", "starlette", "fastapi", "pydantic", "service/api"),
    ),
    ("event loop, engine, threads", ("asyncio", "uvloop", "service/engine", "concurrent", "threading", "selectors")),
)


def categorize(stack: str) -> str:
    for name, keys in GRAPH_CATEGORIES:
        if any(k in stack for k in keys):
            return name
    for frame in reversed(stack.split(";")):
        for name, keys in FRAME_CATEGORIES:
            if any(k in frame for k in keys):
                return name
    return "other"


def py_spy_record(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    """Start `py-spy record` (collapsed stacks, not pausing the process); None if py-spy is missing."""
    import shutil

    exe = Path(sys.executable).parent / "py-spy"
    exe_path = str(exe) if exe.exists() else shutil.which("py-spy")
    if not exe_path:
        log.warning("py-spy not found: no server profile")
        return None
    cmd = [exe_path, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "100", "-f", "raw"]
    cmd += ["--nonblocking", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_stacks(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Share of samples per category and the top functions by own samples, from py-spy's raw output."""
    cats: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        name = categorize(stack)
        cats[name] = cats.get(name, 0) + n
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + n
    share = {k: v / total for k, v in sorted(cats.items(), key=lambda kv: -kv[1])} if total else {}
    leaves = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return {"samples": total, "by_category": share, "top_own": [(k, v / total) for k, v in leaves]}


async def warm_prompts(url: str, classes: Sequence[RequestClass], prompts: Sequence[str], clients: int = 16) -> None:
    """One request per prompt and model of the mix (the raw sampler's prompt cache is filled too)."""
    bodies = [
        json.dumps({"prompt": p, "seed": 0, **({"model": c.model} if c.model else {})}).encode()
        for c in {c.model: c for c in classes}.values()
        for p in prompts
    ]
    pool = Pool(url)

    async def worker(k: int) -> None:
        for body in bodies[k::clients]:
            await pool.request("POST", "/generate", body, {"Accept": "image/png"})

    await asyncio.gather(*(worker(k) for k in range(clients)))
    pool.close()


# --- phases --------------------------------------------------------------------------------------


def run_phase(server: ServerProcess, mix: RequestMix, kind: str, level: float, seconds: float, seed: int = 0):
    """One load phase against `server`: summary + CPU + batch distribution."""
    before = batch_histogram(asyncio.run(get(server.url, "/metrics"))[1].decode())
    cpu_client0, cpu_server0 = time.process_time(), server.cpu_s()
    if kind == "closed":
        outcomes, wall = asyncio.run(closed_loop(server.url, mix, int(level), seconds))
    else:
        outcomes, wall = asyncio.run(open_loop(server.url, mix, level, seconds, seed=seed))
    cpu_client, cpu_server = time.process_time() - cpu_client0, server.cpu_s() - cpu_server0
    after = batch_histogram(asyncio.run(get(server.url, "/metrics"))[1].decode())
    row = summarize(outcomes, wall, mix)
    row.update(
        kind=kind,
        level=level,
        batches=histogram_delta(before, after),
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


# --- the raw sampler -----------------------------------------------------------------------------


def raw_sampler(
    cfg: HttpBenchConfig, classes: Sequence[RequestClass], prompts: Sequence[str], pipelines=None
) -> tuple[dict[str, dict[int, float]], Any]:
    """images/s of `Pipeline.generate` per (model, steps) and batch size, in this process."""
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    if pipelines is None:
        settings = BackendSettings(threads=cfg.threads) if cfg.threads else BackendSettings()
        pipelines = {}
        for b in cfg.bundles:
            p = load_pipeline(b, settings)
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


def mix_throughput(per_key: dict[str, float], classes: Sequence[RequestClass], default_key: str) -> float:
    """images/s of the request mix when each class runs at `per_key` images/s (weighted harmonic)."""
    total_images = sum(c.weight * c.n for c in classes)
    seconds = 0.0
    for c in classes:
        key = f"{c.model}@{c.steps}" if c.model and c.steps else default_key
        seconds += c.weight * c.n / per_key[key]
    return total_images / seconds


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
    if cfg.threads:
        env["FEWSTEP_BACKEND__THREADS"] = str(cfg.threads)

    def mix(seed_offset: int) -> RequestMix:
        return RequestMix(classes, prompts, seed=cfg.seed + seed_offset)

    log.info("raw sampler, first round")
    raw1, pipes = raw_sampler(cfg, classes, prompts)

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
            assert prof.proc is not None
            spy = py_spy_record(prof.proc.pid, cfg.py_spy_s, out_dir / "http-server-stacks.txt")
            spied = run_phase(prof, mix(7), "closed", 32, cfg.py_spy_s)
            if spy is not None:
                spy.wait(60)
                stacks = (out_dir / "http-server-stacks.txt").read_text()
                doc["server_profile"] = {"phase": spied, **summarize_stacks(stacks)}
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


def ratios(doc: dict[str, Any], classes: Sequence[RequestClass]) -> dict[str, Any]:
    rounds = doc["raw"]["rounds"]
    keys = list(rounds[0])
    raw = {k: {b: statistics.mean(r[k][b] for r in rounds) for b in rounds[0][k]} for k in keys}
    best = {k: max(v.values()) for k, v in raw.items()}
    best_batch = {k: max(v, key=v.get) for k, v in raw.items()}
    b1 = {k: v[1] for k, v in raw.items() if 1 in v}
    if doc["raw"].get("best"):  # the phases alternated with the server's (side by side)
        # per model, the better of batch 1 and the sweep's best batch as measured in these phases
        # (on a shared machine the short sweep can crown a batch size the long phases do not bear out)
        one = {k: statistics.mean(x["per_key"][k] for x in doc["raw"]["batch1"]) for k in keys}
        sweep_best = {k: statistics.mean(x["per_key"][k] for x in doc["raw"]["best"]) for k in keys}
        best = {k: max(one[k], sweep_best[k]) for k in keys}
        best_batch = {k: 1 if one[k] >= sweep_best[k] else doc["raw"]["best"][0]["batch"][k] for k in keys}
        raw_best = mix_throughput(best, classes, keys[0])
        raw_b1 = mix_throughput(one, classes, keys[0])
    else:  # only the sweep
        raw_best = mix_throughput(best, classes, keys[0])
        raw_b1 = mix_throughput(b1, classes, keys[0]) if len(b1) == len(keys) else None
    closed = {r["level"]: r for r in doc["profiled"]["closed"]}
    sat_rows = doc["profiled"].get("saturated") or [r for lvl, r in closed.items() if lvl >= 16]
    saturated = statistics.mean([r["images_per_s"] for r in sat_rows])
    # the server's gain: profiled bounds over max batch 1, each at 32 clients, phases alternated
    server32 = sum(r["images_per_s"] for r in sat_rows)
    batch1_32 = sum(r["images_per_s"] for r in doc["batch1"]["closed"])
    single = closed[min(closed)]["latency_s"]["p50"]
    p99_50 = next((r["latency_s"]["p99"] for r in doc["profiled"]["open"] if r["load"] == 0.5), None)
    hw_gain = raw_best / raw_b1 if raw_b1 else None
    # the queueing floor: an ideal FIFO server with no batching and no overhead, whose service
    # times are the backend times of single requests (batch 1), at the 50% load's arrival rate,
    # plus the single request's time outside the backend
    floor = None
    open50 = next((r for r in doc["profiled"]["open"] if r["load"] == 0.5), None)
    services = closed[min(closed)].get("computes_s")
    if open50 and services:
        outside = (single or 0.0) - statistics.median(services)
        floor = fifo_p99(services, open50["level"]) + max(0.0, outside)
    server_gain = (server32 / len(sat_rows)) / (batch1_32 / len(doc["batch1"]["closed"]))
    return {
        "raw_images_per_s": raw,
        "raw_best_batch": best_batch,
        "raw_best_mix_images_per_s": raw_best,
        "raw_batch1_mix_images_per_s": raw_b1,
        "http_saturated_images_per_s": saturated,
        "http_over_raw": saturated / raw_best,
        "hardware_batching_gain": hw_gain,
        "server_batching_gain": server_gain,
        "gain_captured": server_gain / hw_gain if hw_gain else None,
        "single_request_latency_s": single,
        "p99_at_50pct_s": p99_50,
        "p99_at_50pct_over_single": p99_50 / single if p99_50 and single else None,
        "fifo_floor_p99_at_50pct_s": floor,
        "fifo_floor_over_single": floor / single if floor and single else None,
        "targets": {"http_over_raw": ">= 0.9", "gain_captured": ">= 0.9", "p99_at_50pct_over_single": "<= 3"},
    }


# --- report --------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def markdown(doc: dict[str, Any]) -> str:
    r = doc["ratios"]
    m = doc["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, shared (load average {m['loadavg_at_start']} at start, "
        f"{m.get('loadavg_at_end')} at end). Run {doc['started']} to {doc.get('finished')}.",
        "",
        "Warm-up cost profiles (ms per batch by size) and the bounds derived from them:",
        "",
        "| model | steps | ms per batch (size: ms) | gain | max batch | max wait ms |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for p in doc.get("batch_profiles", []):
        ms = ", ".join(f"{b}: {v:.0f}" for b, v in p["ms_per_batch"].items())
        lines.append(
            f"| {p['model']} | {p['steps']} | {ms} | {p['gain']:.2f} | {p['max_batch_images']} | "
            f"{1000 * p['max_wait_s']:.1f} |"
        )
    lines += ["", "Raw sampler (`Pipeline.generate`, mean of the two rounds), images/s by batch size:", ""]
    raw = r["raw_images_per_s"]
    batches = sorted({int(b) for v in raw.values() for b in v})
    lines += ["| model@steps | " + " | ".join(f"b={b}" for b in batches) + " |", "|---|" + "---:|" * len(batches)]
    for k, v in raw.items():
        v = {int(b): x for b, x in v.items()}
        lines.append(f"| {k} | " + " | ".join(f"{v[b]:.1f}" if b in v else "-" for b in batches) + " |")
    lines += [
        "",
        "Closed loop: the sweep with profiled bounds, then max batch 1 and profiled bounds alternated at 32 clients:",
        "",
        "| server | clients (raw: batch) | images/s | p50 ms | p95 ms | p99 ms | queue p50 ms | mean batch "
        "| statuses (raw: images/s per model) | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for row in doc["profiled"]["closed"]:
        lines.append(_row("profiled", f"{row['level']:g}", row))
    raw_pairs = zip(doc["raw"].get("batch1", []), doc["raw"].get("best", []), strict=False)
    for i, (one, best) in enumerate(raw_pairs, 1):
        for name, row in ((f"raw sampler, batch 1 (round {i})", one), (f"raw sampler, best batch (round {i})", best)):
            per_key = ", ".join(f"{k} {v:.1f}" for k, v in row["per_key"].items())
            b = ", ".join(f"{k} b={v}" for k, v in row["batch"].items())
            lines.append(f"| {name} | {b} | {row['images_per_s']:.1f} | - | - | - | - | - | {per_key} | - |")
    pairs = zip(doc["batch1"]["closed"], doc["profiled"].get("saturated", []), strict=False)
    for i, (one, prof) in enumerate(pairs, 1):
        lines.append(_row(f"max batch 1 (round {i})", f"{one['level']:g}", one))
        lines.append(_row(f"profiled (round {i})", f"{prof['level']:g}", prof))
    lines += [
        "",
        f"Open loop, Poisson arrivals at fractions of the capacity {doc['profiled']['capacity_images_per_s']:.1f} "
        "images/s (median of the saturated closed-loop phases); fixed bounds run right beside profiled ones:",
        "",
        "| server | load | images/s | p50 ms | p95 ms | p99 ms | queue p50 ms | mean batch | statuses | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for name, rows in (("profiled", doc["profiled"]["open"]), ("fixed 8 / 10 ms", doc["fixed"]["open"])):
        for row in rows:
            lines.append(_row(name, f"{100 * row['load']:.0f}%", row))
    gain = r["hardware_batching_gain"]
    lines += [
        "",
        "| ratio | measured | target |",
        "|---|---:|---|",
        f"| HTTP saturated / raw best ({r['http_saturated_images_per_s']:.1f} / {r['raw_best_mix_images_per_s']:.1f} "
        f"images/s) | {r['http_over_raw']:.2f} | >= 0.9 |",
        f"| server batching gain / hardware gain ({r['server_batching_gain']:.2f} / "
        f"{gain if gain is None else f'{gain:.2f}'}) | {_f(r['gain_captured'])} | >= 0.9 |",
        f"| p99 at 50% load / single-request p50 ({_ms(r['p99_at_50pct_s'])} / {_ms(r['single_request_latency_s'])} ms)"
        f" | {_f(r['p99_at_50pct_over_single'])} | <= 3 |",
        f"| same for an ideal FIFO server without batching (service times: single requests' backend times) "
        f"({_ms(r.get('fifo_floor_p99_at_50pct_s'))} ms) | {_f(r.get('fifo_floor_over_single'))} | (floor) |",
    ]
    if "server_profile" in doc:
        sp = doc["server_profile"]
        lines += [
            "",
            f"Where the server's time goes at 32 clients (py-spy, {sp['samples']} samples of non-idle threads, "
            f"{sp['phase']['images_per_s']:.1f} images/s while sampled):",
            "",
            "| part | share of samples |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {100 * v:.1f}% |" for k, v in sp["by_category"].items()]
    return "\n".join(lines)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _row(name: str, level: str, row: dict[str, Any]) -> str:
    lat, q = row["latency_s"], row["queue_s"]
    batches = row["batches"]
    total = sum(b["batches"] for b in batches.values())
    mean = sum(b["mean_images"] * b["batches"] for b in batches.values()) / total if total else 0.0
    statuses = " ".join(f"{k}:{v}" for k, v in row["statuses"].items())
    return (
        f"| {name} | {level} | {row['images_per_s']:.1f} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | {_ms(lat['p99'])} "
        f"| {_ms(q['p50'])} | {mean:.2f} | {statuses} | {100 * row['cpu']['client_cores']:.1f}% |"
    )


def plot(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    r = doc["ratios"]
    fig, ax = plt.subplots(figsize=(6, 4))
    closed = doc["profiled"]["closed"]
    ax.plot([c["level"] for c in closed], [c["images_per_s"] for c in closed], "o-", label="HTTP, profiled bounds")
    sat = doc["profiled"].get("saturated", [])
    ax.plot(
        [x["level"] for x in sat],
        [x["images_per_s"] for x in sat],
        "o",
        color="C0",
        mfc="none",
        label="HTTP, profiled (alternated rounds)",
    )
    b1 = doc["batch1"]["closed"]
    ax.plot([x["level"] for x in b1], [x["images_per_s"] for x in b1], "s", color="C1", label="HTTP, max batch 1")
    ax.axhline(r["raw_best_mix_images_per_s"], color="k", ls="--", label="raw sampler, best batch")
    if r["raw_batch1_mix_images_per_s"]:
        ax.axhline(r["raw_batch1_mix_images_per_s"], color="gray", ls=":", label="raw sampler, batch 1")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.set_ylabel("images/s")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against concurrency")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "http-throughput.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    series = (("profiled", doc["profiled"]["open"], "C0"), ("fixed 8 / 10 ms", doc["fixed"]["open"], "C1"))
    for name, rows, color in series:
        loads = [100 * x["load"] for x in rows]
        ax.plot(loads, [1000 * x["latency_s"]["p50"] for x in rows], "o-", color=color, label=f"{name} p50")
        ax.plot(loads, [1000 * x["latency_s"]["p99"] for x in rows], "^--", color=color, label=f"{name} p99")
    if r["single_request_latency_s"]:
        ax.axhline(1000 * r["single_request_latency_s"], color="gray", ls=":", label="single request p50")
        ax.axhline(3000 * r["single_request_latency_s"], color="r", ls=":", label="3x single (p99 target at 50%)")
    ax.set_xlabel("offered load (% of measured capacity), Poisson arrivals")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Latency against load")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "http-latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
