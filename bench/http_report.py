"""`fewstep bench http`'s figures: the issue's ratios from a run's phases, the Markdown report and the plots."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.load import RequestClass, fifo_p99

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


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
        queueing = fifo_p99(services, open50["level"])
        floor = None if queueing is None else queueing + max(0.0, outside)
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
        "p99_at_50pct_over_fifo_floor": p99_50 / floor if p99_50 and floor else None,
        "targets": {
            "http_over_raw": ">= 0.9",
            "gain_captured": ">= 0.9",
            "p99_at_50pct_over_single": "<= 3",
            "p99_at_50pct_over_fifo_floor": "<= 1.2",
        },
    }


def mix_throughput(per_key: dict[str, float], classes: Sequence[RequestClass], default_key: str) -> float:
    """images/s of the request mix when each class runs at `per_key` images/s (weighted harmonic)."""
    total_images = sum(c.weight * c.n for c in classes)
    seconds = 0.0
    for c in classes:
        key = f"{c.model}@{c.steps}" if c.model and c.steps else default_key
        seconds += c.weight * c.n / per_key[key]
    return total_images / seconds


# --- report --------------------------------------------------------------------------------------


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def markdown(doc: dict[str, Any]) -> str:
    r = doc["ratios"]
    m = doc["machine"]
    backend = doc.get("config", {}).get("backend") or "the server default"
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, shared (load average {m['loadavg_at_start']} at start, "
        f"{m.get('loadavg_at_end')} at end). Run {doc['started']} to {doc.get('finished')}. Backend: "
        f"{backend} (raw sampler: {doc.get('raw_backends', '?')}).",
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
    floor = r.get("fifo_floor_p99_at_50pct_s")
    floor_text = f"{_ms(floor)} ms" if floor else "none: at this rate a batch-1 server would be overloaded"
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
        f"({floor_text}) | {_f(r.get('fifo_floor_over_single'))} | (floor) |",
        f"| p99 at 50% load / that FIFO floor | {_f(r.get('p99_at_50pct_over_fifo_floor'))} | <= 1.2 (issue 18) |",
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
