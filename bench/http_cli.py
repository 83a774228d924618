"""The `fewstep bench http` command line (the measurement itself is `bench.http`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench.http import DEFAULT_MIX, HttpBenchConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = HttpBenchConfig()
    p.add_argument("--bundles", nargs="+", default=list(d.bundles), help="bundle directories the server loads")
    p.add_argument(
        "--mix",
        nargs="+",
        default=list(DEFAULT_MIX),
        help="request classes 'model=NAME,steps=K,guidance=W1|W2,n=N,weight=X' (keys optional)",
    )
    p.add_argument("--concurrency", nargs="+", type=int, default=list(d.concurrency), help="closed-loop clients")
    p.add_argument("--loads", nargs="+", type=float, default=list(d.loads), help="Poisson loads, fractions of capacity")
    p.add_argument(
        "--compare-loads", nargs="+", type=float, default=list(d.compare_loads), help="loads run with fixed bounds too"
    )
    p.add_argument("--closed-s", type=float, default=d.closed_s, help="seconds per closed-loop phase")
    p.add_argument("--open-s", type=float, default=d.open_s, help="seconds per Poisson phase")
    p.add_argument("--raw-batches", nargs="+", type=int, default=list(d.raw_batches), help="raw sampler batch sizes")
    p.add_argument("--prompts", type=int, default=d.prompts, help="distinct shapes-world captions in the mix")
    p.add_argument("--threads", type=int, help="backend intra-op threads, server and raw sampler (default: all cores)")
    p.add_argument(
        "--backend",
        help="server and raw sampler: 'auto', a kind or a 'kind-precision' path (default: the server's default)",
    )
    p.add_argument(
        "--profile-budget-s",
        type=float,
        default=d.profile_budget_s,
        help="server's warm-up profile budget per model (default: the server's)",
    )
    p.add_argument("--gain-rounds", type=int, default=d.gain_rounds, help="max batch 1 / profiled alternations")
    p.add_argument("--py-spy-s", type=float, default=d.py_spy_s, help="py-spy the server at 32 clients this long")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="results/bench", help="directory for http.json, http.md and the plots")
    p.add_argument("--report-only", action="store_true", help="recompute ratios, http.md and plots from http.json")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bench.http import run_http_bench
    from bench.http_report import markdown

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = HttpBenchConfig(
        bundles=tuple(args.bundles),
        mix=tuple(args.mix),
        concurrency=tuple(args.concurrency),
        loads=tuple(args.loads),
        compare_loads=tuple(args.compare_loads),
        closed_s=args.closed_s,
        open_s=args.open_s,
        raw_batches=tuple(args.raw_batches),
        prompts=args.prompts,
        threads=args.threads,
        backend=args.backend,
        profile_budget_s=args.profile_budget_s,
        seed=args.seed,
        py_spy_s=args.py_spy_s,
        gain_rounds=args.gain_rounds,
    )
    out = Path(args.out)
    if args.report_only:
        from bench.http_report import plot, ratios
        from bench.load import RequestClass

        doc = json.loads((out / "http.json").read_text())
        doc["ratios"] = ratios(doc, [RequestClass.parse(m) for m in doc["config"]["mix"]])
        (out / "http.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        plot(doc, out)
    else:
        doc = run_http_bench(cfg, out)
    text = markdown(doc)
    (out / "http.md").write_text(text + "\n")
    print(text)
    print(json.dumps(doc["ratios"], indent=2, default=str))
    print(f"wrote {out / 'http.json'}, {out / 'http.md'}, {out / 'http-throughput.png'}, {out / 'http-latency.png'}")
    return 0
