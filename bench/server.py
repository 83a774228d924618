"""The `fewstep serve` process a benchmark drives: start and stop it, its CPU time, its /metrics
histograms, and where its time goes (py-spy). Shared by `bench.http` and `bench.step_sched`."""

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
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.load import Pool, RequestClass
from fewstep.provenance import provenance

log = logging.getLogger(__name__)

# The server's log line for its warm-up batch profile (`service.engine.profile`).
PROFILE_LINE = re.compile(
    r"batch profile (?P<model>\S+) at (?P<steps>\d+) steps \(ms per batch: (?P<ms>[^)]*)\): gain (?P<gain>[\d.]+); "
    r"max_batch_images (?P<max_batch>\d+), max_wait_s (?P<max_wait>[\d.]+)"
)

log = logging.getLogger(__name__)

# --- CPU accounting ------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_cpu_s(sid: int) -> float:
    """User + system CPU seconds of the live processes of session `sid` (a server started with
    `start_new_session`, whose children are forks); exited children are not counted."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # fields after the name: state ppid pgrp session ...
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    with _suppress():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    # the commit, `-dirty` when the tree had uncommitted changes: a figure names the code behind it
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
        **provenance(),
    }


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

    ready_path = "/readyz"
    label = "fewstep serve"
    # a server that forks processes of its own (LitServe) runs in its own session, and exit signals
    # its whole process group: its children outlive a signal to the parent alone
    process_group = False

    def __init__(self, bundles: Sequence[str], log_path: Path, env: dict[str, str] | None = None, **settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "fewstep_cli", "serve", "--bundles", *bundles, "--port", str(self.port)]
        for key, value in settings.items():
            if value is not None:
                cmd += [f"--{key.replace('_', '-')}", str(value)]
        self.cmd = cmd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=self.process_group
        )

    def __enter__(self) -> ServerProcess:
        self.start()
        self.wait_ready()
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.log_path}")
            with _suppress():
                if asyncio.run(get(self.url, self.ready_path))[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {timeout_s} s; see {self.log_path}")

    def cpu_s(self) -> float:
        assert self.proc is not None
        return session_cpu_s(self.proc.pid) if self.process_group else proc_cpu_s(self.proc.pid)

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

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        if self.process_group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and (self.proc.poll() is None or self.process_group):
            self._signal(signal.SIGTERM)  # the drain path: admission closes, then a clean exit
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
            if self.process_group:  # the group's other members, whatever the parent did
                time.sleep(0.5)
                self._signal(signal.SIGKILL)
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


BACKEND_SECONDS = ("fewstep_batch_compute_seconds", "fewstep_step_iteration_seconds")


def backend_seconds(metrics_text: str) -> float:
    """Seconds the backend has computed so far, all models, either scheduling (the `_sum` of the
    request loop's batch compute and the step loop's iteration histograms). Its change over a phase,
    divided by the phase's wall time, is how busy the server kept the backend: below 1 at saturation,
    the rest went to the server's own work between batches."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        s.value
        for fam in text_string_to_metric_families(metrics_text)
        if fam.name in BACKEND_SECONDS
        for s in fam.samples
        if s.name.endswith("_sum")
    )


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
GRAPH_CATEGORIES = (
    ("text encoder (ORT)", ("service/text.py",)),
    ("denoiser (ORT run)", ("onnxruntime",)),
    ("denoiser (OpenVINO run)", ("openvino",)),
)
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


def profiled_phase(server: ServerProcess, seconds: float, out: Path, phase: Callable[[], dict]) -> dict[str, Any]:
    """Run `phase` (a load phase of about `seconds`) while py-spy records `server` into `out`:
    {"phase": its row} plus the stack summary (`summarize_stacks`) when py-spy is installed."""
    assert server.proc is not None
    spy = py_spy_record(server.proc.pid, seconds, out)
    row = phase()
    if spy is None:
        return {"phase": row}
    spy.wait(60)
    return {"phase": row, **summarize_stacks(out.read_text())}


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
