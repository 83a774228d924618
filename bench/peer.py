"""`fewstep bench peer`: fewstep's server against LitServe on the same bundle, load and client.

Issue 18 asks fewstep to be ahead of the best general-purpose peer on its own ground. The peer
(`bench.peer_litserve`) serves the same bundle through the same `Pipeline`, on the backend and
precision the fewstep server chose for itself (read from its /v1/models), so the difference
measured is the serving layer. Both servers stay up for the whole run (an idle one costs nothing)
and are measured in alternated rounds: in each round every concurrency runs on both, the order
flipping from round to round, so that drift of a shared machine falls on both alike. The same
`bench.load` client drives both (closed-loop clients, keep-alive HTTP/1.1, PNG replies).

Reported per server and concurrency: the median over rounds of images/s and of the p50 / p99
latency, with each round's figures; and the two ratios the issue sets targets on: images/s at the
highest concurrency (fewstep / peer, target >= 1.05) and the 1-client p50 (fewstep / peer, target
<= 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.defaults import STUDENT_K4
from bench.server import ServerProcess

log = logging.getLogger(__name__)


def job_from_body(body: dict[str, Any], default_steps: int, default_guidance: float):
    """The load generator's JSON body -> one `ImageJob`; a ValueError names a field it cannot serve."""
    from service.pipeline import ImageJob

    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        raise ValueError("prompt: a non-empty string is required")
    if int(body.get("n", 1)) != 1:
        raise ValueError("n: the peer serves one image per request")
    return ImageJob(
        prompt=body["prompt"],
        seed=int(body.get("seed", 0)),
        steps=int(body.get("steps") or default_steps),
        guidance=float(body.get("guidance_scale") or default_guidance),
    )


@dataclass(frozen=True)
class PeerBenchConfig:
    bundle: str = f"bundles/{STUDENT_K4}"
    guidance: tuple[float, ...] = (1.5, 3.0, 4.5)  # the HTTP benchmark's 4-step class
    clients: tuple[int, ...] = (1, 32)
    rounds: int = 3
    seconds: float = 10.0
    prompts: int = 64
    peer_max_batch: int = 16
    peer_batch_timeout_s: float = 0.005
    threads: int | None = None
    py_spy_s: float = 0.0  # > 0: record fewstep's process under the highest concurrency this long (extra phase)
    seed: int = 0


def peer_settings(backend_label: str) -> dict[str, str]:
    """The fewstep server's `backend` label (/v1/models) -> the peer's pinned kind and precision:
    'auto:openvino-bf16' pins that path; a pinned kind ('onnxruntime') keeps precision 'auto',
    which resolves from the same bundle record as the server's."""
    from service.backends.base import split_path

    if backend_label.startswith("auto:"):
        kind, precision = split_path(backend_label.removeprefix("auto:"))
        return {"kind": kind, "precision": precision}
    return {"kind": backend_label, "precision": "auto"}


def ratios(rows: list[dict[str, Any]], clients: tuple[int, ...]) -> dict[str, float | None]:
    """fewstep / peer: median images/s at the highest concurrency, median p50 at one client."""

    def med(server: str, c: int, key: str) -> float | None:
        vals = [r[key] for r in rows if r["server"] == server and r["clients"] == c and r[key] is not None]
        return statistics.median(vals) if vals else None

    top = max(clients)
    out: dict[str, float | None] = {}
    f, p = med("fewstep", top, "images_per_s"), med("litserve", top, "images_per_s")
    out[f"images_per_s_{top}_clients"] = f / p if f and p else None
    if 1 in clients:
        f, p = med("fewstep", 1, "p50_s"), med("litserve", 1, "p50_s")
        out["p50_1_client"] = f / p if f and p else None
    return out


def markdown(doc: dict[str, Any]) -> str:
    cfg, rows = doc["config"], doc["rows"]
    lines = [
        f"Bundle `{cfg['bundle']}`, guidance {cfg['guidance']}, {cfg['rounds']} alternated rounds of "
        f"{cfg['seconds']:g} s per server and concurrency. fewstep: its defaults (backend "
        f"`{doc['fewstep_backend']}`); LitServe {doc['litserve_version']}: the same pipeline on "
        f"{doc['peer_settings']}, max batch {cfg['peer_max_batch']}, batch timeout "
        f"{1000 * cfg['peer_batch_timeout_s']:g} ms. Machine: {doc['machine'].get('cpu', '?')}, "
        f"{doc['machine'].get('cores', '?')} cores. Medians over rounds (each round's figure in brackets).",
        "",
        "| server | clients | images/s | p50 (ms) | p99 (ms) | server CPU ms / image | non-200 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for server in ("fewstep", "litserve"):
        for c in cfg["clients"]:
            rs = [r for r in rows if r["server"] == server and r["clients"] == c]
            if not rs:
                continue
            ips = [r["images_per_s"] for r in rs]
            p50 = [1000 * r["p50_s"] for r in rs if r["p50_s"] is not None]
            p99 = [1000 * r["p99_s"] for r in rs if r["p99_s"] is not None]
            bad = sum(r["non_200"] for r in rs)
            cpus = [r["server_cpu_ms_per_image"] for r in rs if r.get("server_cpu_ms_per_image") is not None]
            cpu = f"{statistics.median(cpus):.1f}" if cpus else "-"
            lines.append(
                f"| {server} | {c} | {statistics.median(ips):.1f} ({', '.join(f'{v:.1f}' for v in ips)}) "
                f"| {statistics.median(p50):.1f} ({', '.join(f'{v:.1f}' for v in p50)}) "
                f"| {statistics.median(p99):.1f} | {cpu} | {bad} |"
            )
    lines.append("")
    for key, value in doc["ratios"].items():
        target = ">= 1.05" if key.startswith("images") else "<= 1"
        lines.append(f"- fewstep / LitServe, {key.replace('_', ' ')}: {value:.3f} (target {target})" if value else "")
    prof = doc.get("fewstep_profile")
    if prof and "by_category" in prof:
        lines += ["", f"Where fewstep's process spends its samples at {max(cfg['clients'])} clients (py-spy):", ""]
        lines += ["| part | share |", "| --- | --- |"]
        lines += [f"| {k} | {v:.0%} |" for k, v in prof["by_category"].items()]
    return "\n".join(lines)


class PeerProcess(ServerProcess):
    """`fewstep bench peer-server` (`bench.peer_litserve`) in a subprocess, ready when LitServe's
    /health answers 200."""

    ready_path = "/health"
    label = "the LitServe peer"
    process_group = True  # LitServe forks its API server and inference worker

    def __init__(self, bundle: str, log_path: Path, settings: dict[str, str], cfg: PeerBenchConfig) -> None:
        super().__init__([], log_path)
        self.cmd = [sys.executable, "-m", "fewstep_cli", "bench", "peer-server", "--bundle", bundle]
        self.cmd += ["--port", str(self.port)]
        self.cmd += ["--kind", settings["kind"], "--precision", settings["precision"]]
        self.cmd += ["--max-batch", str(cfg.peer_max_batch), "--batch-timeout", str(cfg.peer_batch_timeout_s)]
        if cfg.threads:
            self.cmd += ["--threads", str(cfg.threads)]


def phase(server: ServerProcess, mix, clients: int, seconds: float) -> dict[str, Any]:
    from bench.load import closed_loop, summarize

    cpu0 = server.cpu_s()
    outcomes, wall = asyncio.run(closed_loop(server.url, mix, clients, seconds))
    cpu = server.cpu_s() - cpu0
    s = summarize(outcomes, wall, mix)
    ok = s["statuses"].get("200", 0)
    return {
        "images_per_s": s["images_per_s"],
        "p50_s": s["latency_s"]["p50"],
        "p99_s": s["latency_s"]["p99"],
        "requests": s["requests"],
        "non_200": s["requests"] - ok,
        # the server's CPU (all its processes) per image: the serving layer's overhead shows here,
        # since both run the same pipeline
        "server_cpu_ms_per_image": 1000 * cpu / max(1, ok),
        "server_cores": cpu / wall,
    }


def run_peer_bench(cfg: PeerBenchConfig, out_dir: Path) -> dict[str, Any]:
    import litserve

    from bench.load import RequestClass, RequestMix, shapes_prompts
    from bench.server import get, machine, profiled_phase, warm_prompts
    from fewstep.bundle import load_manifest

    out_dir.mkdir(parents=True, exist_ok=True)
    name = load_manifest(Path(cfg.bundle)).name
    classes = [RequestClass(model=name, guidance=cfg.guidance)]
    prompts = shapes_prompts(cfg.prompts, cfg.seed)
    env = {"FEWSTEP_BACKEND__THREADS": str(cfg.threads)} if cfg.threads else {}
    doc: dict[str, Any] = {
        "config": asdict(cfg),
        "machine": machine(),
        "litserve_version": litserve.__version__,
        "started": time.strftime("%FT%TZ", time.gmtime()),
    }
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        # fewstep first, alone, so that its start-up profiles have the machine to itself
        ours = stack.enter_context(ServerProcess([cfg.bundle], out_dir / "peer-fewstep.log", env))
        card = json.loads(asyncio.run(get(ours.url, "/v1/models"))[1])["data"][0]
        doc["fewstep_backend"] = card["backend"]
        doc["peer_settings"] = peer_settings(card["backend"])
        peer = stack.enter_context(PeerProcess(cfg.bundle, out_dir / "peer-litserve.log", doc["peer_settings"], cfg))
        servers = {"fewstep": ours, "litserve": peer}
        for server in servers.values():
            asyncio.run(warm_prompts(server.url, classes, prompts))
        for r in range(cfg.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for c in cfg.clients:
                for label in order:
                    mix = RequestMix(classes, prompts, seed=cfg.seed + 1000 * r + c)  # same requests for both
                    row = {"server": label, "round": r, "clients": c} | phase(servers[label], mix, c, cfg.seconds)
                    log.info(
                        "round %d, %s, %d clients: %.1f images/s, p50 %.1f ms",
                        r,
                        label,
                        c,
                        row["images_per_s"],
                        1000 * (row["p50_s"] or 0),
                    )
                    rows.append(row)
        if cfg.py_spy_s > 0:  # where fewstep's own process spends its time at the highest concurrency
            mix = RequestMix(classes, prompts, seed=cfg.seed + 7)
            doc["fewstep_profile"] = profiled_phase(
                ours,
                cfg.py_spy_s,
                out_dir / "peer-fewstep-stacks.txt",
                lambda: phase(ours, mix, max(cfg.clients), cfg.py_spy_s),
            )
    doc["rows"] = rows
    doc["ratios"] = ratios(rows, cfg.clients)
    doc["finished"] = time.strftime("%FT%TZ", time.gmtime())
    (out_dir / "peer.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (out_dir / "peer.md").write_text(markdown(doc) + "\n")
    return doc
