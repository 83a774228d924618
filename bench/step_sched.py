"""Step-level against request-level scheduling over HTTP (issue 5), with `bench.http`'s pieces.

Two `fewstep serve` processes on the same bundles and settings, one with `--scheduling request`
and one with `--scheduling step`, are up at once (the idle one sleeps). Capacity is the request-
level server's saturated throughput (closed loop); then, at each offered load (a fraction of that
capacity, Poisson arrivals), the two servers get the same arrival times and the same request
bodies back to back. The default mix is the teacher exported with 4 and 8 steps
(`fewstep export --model models/teacher --out bundles/teacher-48 --steps 4 8`) at guidance 1, 3
and 5, half 4-step, half 8-step.

    python -m bench.step_sched --open-s 30 --out results/bench/step
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.http import run_phase
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


def run_step_bench(cfg: StepBenchConfig, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = [RequestClass.parse(c) for c in cfg.mix]
    prompts = shapes_prompts(cfg.prompts, cfg.seed)
    doc: dict[str, Any] = {"config": asdict(cfg), "machine": machine(), "capacity": {}, "open": {m: [] for m in MODES}}
    settings = {"threads": cfg.threads, "max_batch_images": cfg.max_batch_images}
    with (
        ServerProcess(cfg.bundles, out_dir / "serve-request.log", scheduling="request", **settings) as request,
        ServerProcess(cfg.bundles, out_dir / "serve-step.log", scheduling="step", **settings) as step,
    ):
        servers = {"request": request, "step": step}
        for server in servers.values():
            asyncio.run(warm_prompts(server.url, classes, prompts))
        doc["batch_profiles"] = {m: s.batch_profiles() for m, s in servers.items()}
        for mode, server in servers.items():
            mix = RequestMix(classes, prompts, cfg.seed)
            doc["capacity"][mode] = run_phase(server, mix, "closed", cfg.capacity_clients, cfg.capacity_s, cfg.seed)
        capacity = doc["capacity"]["request"]["requests_per_s"]
        doc["capacity_requests_per_s"] = capacity
        for i, load in enumerate(cfg.loads):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:  # alternate who goes first
                mix = RequestMix(classes, prompts, cfg.seed + i)  # the same bodies for both modes
                row = run_phase(servers[mode], mix, "open", load * capacity, cfg.open_s, seed=cfg.seed + i)
                row["load"] = load
                doc["open"][mode].append(row)
    doc["ratios"] = ratios(doc)
    (out_dir / "step.json").write_text(json.dumps(doc, indent=1, default=str))
    plot(doc, out_dir)
    (out_dir / "step.md").write_text(markdown(doc) + "\n")
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


def markdown(doc: dict[str, Any]) -> str:
    cap = doc["capacity"]
    lines = [
        f"Capacity (closed loop, {doc['config']['capacity_clients']} clients): request level "
        f"{cap['request']['requests_per_s']:.2f} req/s, step level {cap['step']['requests_per_s']:.2f} req/s.",
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


def plot(doc: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, color in zip(MODES, ("C0", "C1"), strict=True):
        rows = doc["open"][mode]
        loads = [100 * r["load"] for r in rows]
        ax.plot(loads, [1000 * r["latency_s"]["p50"] for r in rows], "o-", color=color, label=f"{mode} level p50")
        ax.plot(loads, [1000 * r["latency_s"]["p99"] for r in rows], "^--", color=color, label=f"{mode} level p99")
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


def main(argv: list[str] | None = None) -> int:
    d = StepBenchConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundles", nargs="+", default=list(d.bundles))
    p.add_argument("--mix", nargs="+", default=list(d.mix))
    p.add_argument("--loads", nargs="+", type=float, default=list(d.loads))
    p.add_argument("--capacity-clients", type=int, default=d.capacity_clients)
    p.add_argument("--capacity-s", type=float, default=d.capacity_s)
    p.add_argument("--open-s", type=float, default=d.open_s)
    p.add_argument("--prompts", type=int, default=d.prompts)
    p.add_argument("--threads", type=int)
    p.add_argument("--max-batch-images", type=int)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="results/bench/step")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = StepBenchConfig(
        tuple(a.bundles), tuple(a.mix), tuple(a.loads), a.capacity_clients, a.capacity_s, a.open_s, a.prompts,
        a.threads, a.max_batch_images, a.seed,
    )  # fmt: skip
    doc = run_step_bench(cfg, Path(a.out))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
