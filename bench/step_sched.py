"""Step-level against request-level scheduling over HTTP (issue 5), with `bench.http`'s pieces.

Two `fewstep serve` processes on the same bundles and settings, one with `--scheduling request`
and one with `--scheduling step`, are up at once (the idle one sleeps). Capacity is the request-
level server's saturated throughput (closed loop); then, at each offered load (a fraction of that
capacity, Poisson arrivals), the two servers get the same arrival times and the same request
bodies back to back. The default mix is the teacher exported with 4 and 8 steps
(`fewstep export --model models/teacher --out bundles/teacher-48 --steps 4 8`) at guidance 1, 3
and 5, half 4-step, half 8-step.

    fewstep bench step-sched --open-s 30 --out results/bench/step
    fewstep bench step-sched --backend torch --device cuda ...   # the servers on a GPU
    fewstep bench step-sched --simulate 14,0.09 ...   # a GPU's cost curve, simulated (bench.sim_server)

`--simulate FIXED_MS,PER_ROW_MS` serves a simulated denoiser of that cost per call instead of the
bundles (`bench.sim_server`: the real service, the denoiser a sleep), so the scheduler can be
measured under a cost curve this machine does not have; the mix then names the model `sim`.

`step.json` is rewritten after every phase, so a run cut short (a time-boxed GPU lease) keeps
the phases it finished; the report and the plot are written at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

from bench.http import backend_fields, run_phase
from bench.load import RequestClass, RequestMix, shapes_prompts
from bench.server import ServerProcess, machine, warm_prompts

log = logging.getLogger(__name__)

MODES = ("request", "step")


@dataclass(frozen=True)
class StepBenchConfig:
    bundles: tuple[str, ...] = ("bundles/teacher-48",)
    mix: tuple[str, ...] = ("model=teacher-48,steps=4,guidance=1|3|5", "model=teacher-48,steps=8,guidance=1|3|5")
    loads: tuple[float, ...] = (0.5, 0.7, 0.9)
    capacity_clients: int = 16
    capacity_s: float = 15.0
    open_s: float = 30.0
    prompts: int = 64
    threads: int | None = None
    max_batch_images: int | None = None  # None: both servers derive it from their warm-up profile
    seed: int = 0
    backend: str | None = None  # 'torch' or 'torch-bf16' (bench.http's form); None: the service's default
    device: str | None = None  # 'cpu' or 'cuda'; None: the service's default (cpu)
    simulate: str | None = None  # 'FIXED_MS,PER_ROW_MS': bench.sim_server's denoiser instead of the bundles

    def __post_init__(self) -> None:
        if self.simulate and (self.backend or self.device):
            raise ValueError("--simulate replaces the bundles' backend: drop --backend and --device")


SIM_MIX = ("model=sim,steps=4,guidance=1|3|5", "model=sim,steps=8,guidance=1|3|5")


def server_settings(cfg: StepBenchConfig) -> dict[str, Any]:
    """The `fewstep serve` flags both servers share, as `ServerProcess` settings (`--backend`,
    `--precision`, `--device`, ...); a bad `backend` is a ValueError naming the choices."""
    from service.backends.base import BackendKind

    fields = backend_fields(cfg.backend, None)  # 'kind-precision' is checked there
    kinds = (*get_args(BackendKind), "auto")
    if fields.get("kind", "auto") not in kinds:
        raise ValueError(f"{cfg.backend!r} is not a backend of {kinds}, with or without '-precision'")
    return {
        "backend": fields.get("kind"),
        "precision": fields.get("precision"),
        "device": cfg.device,
        "threads": cfg.threads,
        "max_batch_images": cfg.max_batch_images,
    }


def server_for(cfg: StepBenchConfig, out_dir: Path, scheduling: str) -> ServerProcess:
    """One of the two servers: `fewstep serve` on the bundles, or the simulated denoiser's server."""
    log_path = out_dir / f"serve-{scheduling}.log"
    if cfg.simulate:
        from bench.sim_server import SimServerProcess

        return SimServerProcess(log_path, cfg.simulate, scheduling, cfg.max_batch_images)
    return ServerProcess(cfg.bundles, log_path, scheduling=scheduling, **server_settings(cfg))


def gpu_name() -> str | None:
    """The first GPU's name and memory as nvidia-smi reports them (None without nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def save(doc: dict[str, Any], out_dir: Path) -> None:
    """step.json as it stands (written aside, then renamed: a run killed mid-write keeps the last)."""
    tmp = out_dir / "step.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    tmp.replace(out_dir / "step.json")


def run_step_bench(cfg: StepBenchConfig, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [RequestClass.parse(c) for c in cfg.mix]
    prompts = shapes_prompts(cfg.prompts, cfg.seed)
    doc: dict[str, Any] = {"config": asdict(cfg), "machine": machine(), "capacity": {}, "open": {m: [] for m in MODES}}
    if cfg.device == "cuda":
        doc["gpu"] = gpu_name()
    with server_for(cfg, out_dir, "request") as request, server_for(cfg, out_dir, "step") as step:
        servers = {"request": request, "step": step}
        for server in servers.values():
            asyncio.run(warm_prompts(server.url, classes, prompts))
        doc["batch_profiles"] = {m: s.batch_profiles() for m, s in servers.items()}
        for mode, server in servers.items():
            mix = RequestMix(classes, prompts, cfg.seed)
            doc["capacity"][mode] = run_phase(server, mix, "closed", cfg.capacity_clients, cfg.capacity_s, cfg.seed)
            save(doc, out_dir)
        capacity = doc["capacity"]["request"]["requests_per_s"]
        doc["capacity_requests_per_s"] = capacity
        for i, load in enumerate(cfg.loads):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:  # alternate who goes first
                mix = RequestMix(classes, prompts, cfg.seed + i)  # the same bodies for both modes
                row = run_phase(servers[mode], mix, "open", load * capacity, cfg.open_s, seed=cfg.seed + i)
                row["load"] = load
                doc["open"][mode].append(row)
                save(doc, out_dir)
    doc["ratios"] = ratios(doc)
    save(doc, out_dir)
    (out_dir / "step.md").write_text(markdown(doc) + "\n")
    try:
        plot(doc, out_dir)
    except ImportError:  # a bare GPU machine: the figures above stand, the plot is drawn elsewhere
        log.warning("no matplotlib here: no plot (fewstep bench step-sched --plot-from %s)", out_dir / "step.json")
    return doc


def ratios(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for req, step in zip(doc["open"]["request"], doc["open"]["step"], strict=True):
        rl, sl = req["latency_s"], step["latency_s"]
        out.append(
            {
                "load": req["load"],
                "p50_ratio": sl["p50"] / rl["p50"] if rl["p50"] and sl["p50"] else None,
                "p99_ratio": sl["p99"] / rl["p99"] if rl["p99"] and sl["p99"] else None,
                "throughput_ratio": step["requests_per_s"] / req["requests_per_s"] if req["requests_per_s"] else None,
            }
        )
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def setup_line(doc: dict[str, Any]) -> str:
    """Where the servers ran: backend, device (and the GPU), batch bound, warm-up profiles."""
    cfg = doc["config"]
    where = f"backend {cfg.get('backend') or 'default (onnxruntime)'} on {cfg.get('device') or 'cpu'}"
    if cfg.get("simulate"):
        fixed, per_row = cfg["simulate"].split(",")
        where = f"a simulated denoiser (bench.sim_server) costing {fixed} ms + {per_row} ms per row per call"
    if doc.get("gpu"):
        where += f" ({doc['gpu']})"
    bound = cfg.get("max_batch_images") or "from the warm-up profile"
    line = f"Servers: {where}; max batch images {bound}."
    for mode, rows in (doc.get("batch_profiles") or {}).items():
        for r in rows:
            ms = ", ".join(f"{b}: {v:.1f}" for b, v in r["ms_per_batch"].items())
            line += f" Warm-up profile ({mode} server) {r['model']} at {r['steps']} steps, ms per batch {ms}"
            line += f"; gain {r['gain']:.2f}."
    return line


def _busy(row: dict[str, Any]) -> str:
    """', backend busy 0.94 of the time' where the phase measured it (bench.http.run_phase)."""
    busy = row.get("backend_busy")
    return "" if busy is None else f" (backend busy {busy:.2f} of the time)"


def markdown(doc: dict[str, Any]) -> str:
    cap = doc["capacity"]
    lines = [
        setup_line(doc),
        "",
        f"Capacity (closed loop, {doc['config']['capacity_clients']} clients): request level "
        f"{cap['request']['requests_per_s']:.2f} req/s{_busy(cap['request'])}, step level "
        f"{cap['step']['requests_per_s']:.2f} req/s{_busy(cap['step'])}.",
        "",
        "| load | mode | offered req/s | served req/s | images/s | p50 ms | p99 ms | queue p50 ms | non-200 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        for r in doc["open"][mode]:
            offered = r["requests"] / doc["config"]["open_s"]
            bad = r["requests"] - r["ok"]
            lines.append(
                f"| {100 * r['load']:.0f}% | {mode} | {offered:.2f} | {r['requests_per_s']:.2f} | "
                f"{r['images_per_s']:.2f} | {_ms(r['latency_s']['p50'])} | {_ms(r['latency_s']['p99'])} | "
                f"{_ms(r['queue_s']['p50'])} | {bad} |"
            )
    lines += ["", "| load | p50 step/request | p99 step/request | throughput step/request |", "|---|---|---|---|"]
    for r in doc["ratios"]:
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        p50, p99, thr = f(r["p50_ratio"]), f(r["p99_ratio"]), f(r["throughput_ratio"])
        lines.append(f"| {100 * r['load']:.0f}% | {p50} | {p99} | {thr} |")
    return "\n".join(lines)


def _ms_or_nan(rows: list[dict[str, Any]], q: str) -> list[float]:
    """Latency percentile `q` in ms per row; NaN (a gap in the plot) for a phase with no answer."""
    return [math.nan if r["latency_s"][q] is None else 1000 * r["latency_s"][q] for r in rows]


def plot(doc: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, color in zip(MODES, ("C0", "C1"), strict=True):
        rows = doc["open"][mode]
        loads = [100 * r["load"] for r in rows]
        ax.plot(loads, _ms_or_nan(rows, "p50"), "o-", color=color, label=f"{mode} level p50")
        ax.plot(loads, _ms_or_nan(rows, "p99"), "^--", color=color, label=f"{mode} level p99")
    ax.set_xlabel("offered load (% of request-level capacity), Poisson arrivals")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Step-level vs request-level batching (4/8-step mix)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "step-latency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
