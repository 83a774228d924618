"""`fewstep bench` against servers: HTTP under load, the LitServe peer, step-level scheduling, the
start-up batch profile over repeated starts, a serving process's memory and serving to a latency
objective (`slo`: engines over simulated denoisers, in process); and the two servers those
benchmarks start as child processes (`sim-server`, `peer-server`), started as
`python -m fewstep_cli bench ...` so that there is one command line.

Each handler turns its flags into the module's typed config and calls one function of the module.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _http(args: argparse.Namespace) -> int:
    from bench.http import HttpBenchConfig, run_http_bench
    from bench.http_report import markdown

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


def _peer(args: argparse.Namespace) -> int:
    from bench.peer import PeerBenchConfig, markdown, run_peer_bench

    cfg = PeerBenchConfig(
        bundle=args.bundle,
        guidance=tuple(args.guidance),
        clients=tuple(args.clients),
        rounds=args.rounds,
        seconds=args.seconds,
        peer_max_batch=args.peer_max_batch,
        peer_batch_timeout_s=args.peer_batch_timeout_s,
        threads=args.threads,
        py_spy_s=args.py_spy_s,
    )
    doc = run_peer_bench(cfg, Path(args.out))
    print(markdown(doc))
    print(f"wrote {Path(args.out) / 'peer.json'} and peer.md")
    return 0


def step_options(args: argparse.Namespace):
    """`fewstep bench step-sched`'s flags -> (StepBenchConfig, out dir, finished run's step.json or
    None); a ValueError where the flags contradict each other."""
    from bench.step_sched import SIM_MIX, StepBenchConfig

    mix = args.mix if args.mix is not None else (SIM_MIX if args.simulate else StepBenchConfig.mix)
    cfg = StepBenchConfig(
        bundles=tuple(args.bundles), mix=tuple(mix), loads=tuple(args.loads), capacity_clients=args.capacity_clients,
        capacity_s=args.capacity_s, open_s=args.open_s, prompts=args.prompts, threads=args.threads,
        max_batch_images=args.max_batch_images, seed=args.seed, backend=args.backend, device=args.device,
        simulate=args.simulate,
    )  # fmt: skip
    return cfg, Path(args.out), args.plot_from


def _step_sched(args: argparse.Namespace) -> int:
    from bench.step_sched import markdown, plot, run_step_bench

    cfg, out, plot_from = step_options(args)
    if plot_from:
        print(plot(json.loads(plot_from.read_text()), plot_from.parent))
        return 0
    doc = run_step_bench(cfg, out)
    print(markdown(doc))
    return 0


def _batch_profile(args: argparse.Namespace) -> int:
    from bench.batch_profile import markdown, one_start, run_starts, write_results

    if args.one:  # the child's mode: one start, its JSON on the last line
        doc = one_start(args.model, args.backend, args.precision, args.budget_s, args.max_batch, args.tuning_cache)
        print(json.dumps(doc))
        return 0
    doc = run_starts(
        args.model, args.starts, args.backend, args.precision, args.budget_s, args.max_batch, args.tuning_cache
    )
    write_results(doc, args.out)
    print(markdown(doc))
    return 0


def _memory(args: argparse.Namespace) -> int:
    from bench.memory import memory_rows

    result = memory_rows(args.bundles, args.models, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _slo(args: argparse.Namespace) -> int:
    from bench.slo import SloBenchConfig, run_slo_bench
    from bench.slo_markdown import markdown

    cfg = SloBenchConfig(
        bundles=tuple(args.bundles), curve=args.curve, objective_ms=args.objective_ms, loads=tuple(args.loads),
        seconds=args.seconds, burst_ratio=args.burst_ratio, burst_share=args.burst_share, burst_s=args.burst_s,
        one_object_share=args.one_object_share, thresholds=tuple(args.thresholds), dilation=args.dilation,
        max_batch_images=args.max_batch_images, scheduling=args.scheduling, headroom=args.headroom,
        pressure_start=args.pressure_start, seed=args.seed, servers=tuple(args.servers or ()), backend=args.backend,
        device=args.device, profile_budget_s=args.profile_budget_s,
    )  # fmt: skip
    from bench.slo_score import ScoreConfig

    score = ScoreConfig(
        evaluator=args.evaluator, backend=args.score_backend, device=args.score_device, threads=args.score_threads,
        batch=args.score_batch, share=args.score_share,
    )  # fmt: skip
    out = Path(args.out)
    if args.report_only or args.score_only:  # the figures again from the outcomes a run kept
        from bench.slo import load, report
        from bench.slo_score import score_run

        doc = load(out)
        if args.score_only:  # the scoring pass alone, over a run made with --no-score (or cut short)
            score_run(doc, out, score)
        doc = report(doc, out)
    else:
        doc = run_slo_bench(cfg, out, None if args.no_score else score)
    text = markdown(doc)
    (out / "slo.md").write_text(text)
    print(text)
    print(f"wrote {out / 'slo.json'}, {out / 'outcomes.json.gz'}, {out / 'slo.md'} and {out / 'slo.png'}")
    return 0


def _soak(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from bench.soak import SoakChecks, SoakConfig, markdown, soak

    env = {}
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("FEWSTEP_"):
            raise SystemExit(f"--set {item!r}: give FEWSTEP_NAME=VALUE")
        env[key] = value
    cfg = SoakConfig(
        bundles=tuple(args.bundles), mix=tuple(args.mix), minutes=args.minutes, load=args.load, rate=args.rate,
        window_s=args.window_s, sample_s=args.sample_s, capacity_clients=args.capacity_clients,
        capacity_s=args.capacity_s, prompts=args.prompts, seed=args.seed, threads=args.threads, backend=args.backend,
        env=env, checks=SoakChecks(),
    )  # fmt: skip
    command = (
        shlex.join(["fewstep", "bench", "soak", *sys.argv[sys.argv.index("soak") + 1 :]]) if "soak" in sys.argv else ""
    )
    doc = soak(cfg, Path(args.out), args.machine, command)
    print(markdown(doc))
    name = doc["machine"]["name"]
    print(f"wrote {Path(args.out) / (name + '.json')} and {name}.md")
    return 0 if all(c["ok"] for c in doc["checks"].values()) or not args.strict else 1


def _sim_server(args: argparse.Namespace) -> int:
    from bench.sim_server import SimServerConfig, parse_cost, serve_simulated

    cfg = SimServerConfig(
        port=args.port,
        cost_ms=parse_cost(args.cost_ms),
        steps=tuple(args.steps),
        resolution=args.resolution,
        scheduling=args.scheduling,
        max_batch_images=args.max_batch_images,
        max_wait_s=args.max_wait_s,
        log_level=args.log_level,
    )
    return serve_simulated(cfg)


def _peer_server(args: argparse.Namespace) -> int:
    from bench.peer_litserve import PeerServerConfig, serve_peer

    cfg = PeerServerConfig(
        bundle=args.bundle,
        port=args.port,
        host=args.host,
        kind=args.kind,
        precision=args.precision,
        threads=args.threads,
        max_batch=args.max_batch,
        batch_timeout=args.batch_timeout,
    )
    return serve_peer(cfg)


def _cost(text: str) -> str:
    """A 'FIXED_MS,PER_ROW_MS' flag, checked as it is parsed (`bench.sim_server.parse_cost`)."""
    from bench.sim_server import parse_cost

    try:
        parse_cost(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _step_backend(text: str) -> str:
    """A `--backend` both step-sched servers can be given (a kind, or 'kind-precision')."""
    from bench.step_sched import StepBenchConfig, server_settings

    try:
        server_settings(StepBenchConfig(backend=text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_serving_commands(bsub: argparse._SubParsersAction) -> None:
    _add_http(bsub.add_parser("http", help="a real `fewstep serve` under load, beside the raw sampler's limit"))
    _add_peer(bsub.add_parser("peer", help="fewstep serve against LitServe, same bundle, alternated rounds"))
    _add_step_sched(
        bsub.add_parser("step-sched", help="step-level against request-level scheduling, two servers, same load")
    )
    _add_batch_profile(
        bsub.add_parser("batch-profile", help="spread of the warm-up batch profile's choice over repeated starts")
    )
    _add_memory(bsub.add_parser("memory", help="peak RSS of a serving process by bundles, text encoders shared or not"))
    _add_slo(
        bsub.add_parser(
            "slo",
            help="a latency objective on a bursty trace: fixed models, a static rule and the controller (simulated)",
        )
    )
    _add_soak(
        bsub.add_parser(
            "soak", help="a real server at 70%% of its capacity for 30 minutes: RSS growth, latency drift, errors"
        )
    )
    _add_sim_server(
        bsub.add_parser("sim-server", help="the real service over a denoiser that sleeps a given cost (step-sched)")
    )
    _add_peer_server(bsub.add_parser("peer-server", help="LitServe over one bundle's pipeline (the peer's server)"))


def _add_http(p: argparse.ArgumentParser) -> None:
    from bench.http import DEFAULT_MIX, HttpBenchConfig

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
    p.set_defaults(handler=_http)


def _add_peer(p: argparse.ArgumentParser) -> None:
    from bench.peer import PeerBenchConfig

    d = PeerBenchConfig()
    p.add_argument("--bundle", default=d.bundle)
    p.add_argument("--guidance", nargs="+", type=float, default=list(d.guidance))
    p.add_argument("--clients", nargs="+", type=int, default=list(d.clients))
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--seconds", type=float, default=d.seconds, help="seconds per server, concurrency and round")
    p.add_argument("--peer-max-batch", type=int, default=d.peer_max_batch)
    p.add_argument("--peer-batch-timeout-s", type=float, default=d.peer_batch_timeout_s)
    p.add_argument("--threads", type=int, help="backend intra-op threads of both servers (default: all cores)")
    p.add_argument("--py-spy-s", type=float, default=d.py_spy_s, help="py-spy fewstep's server at the top concurrency")
    p.add_argument("--out", default="results/bench", help="directory for peer.json and peer.md")
    p.set_defaults(handler=_peer)


def _add_step_sched(p: argparse.ArgumentParser) -> None:
    from bench.step_sched import StepBenchConfig

    d = StepBenchConfig()
    p.add_argument("--bundles", nargs="+", default=list(d.bundles))
    p.add_argument("--mix", nargs="+", help="request classes (default: the teacher-48 mix; sim's with --simulate)")
    p.add_argument("--loads", nargs="+", type=float, default=list(d.loads))
    p.add_argument("--capacity-clients", type=int, default=d.capacity_clients)
    p.add_argument("--capacity-s", type=float, default=d.capacity_s)
    p.add_argument("--open-s", type=float, default=d.open_s)
    p.add_argument("--prompts", type=int, default=d.prompts)
    p.add_argument("--threads", type=int)
    p.add_argument("--max-batch-images", type=int)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--backend", type=_step_backend, help="the servers' backend: a kind (torch) or kind-precision (torch-bf16)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="the servers' device (default: the service's, cpu)")
    p.add_argument(
        "--simulate",
        type=_cost,
        metavar="FIXED_MS,PER_ROW_MS",
        help="serve a simulated denoiser of this cost per call (bench.sim_server) instead of --bundles",
    )
    p.add_argument("--out", default="results/bench/step")
    p.add_argument(
        "--plot-from", type=Path, metavar="STEP_JSON", help="only draw the plot of a finished run, beside it"
    )
    p.set_defaults(handler=_step_sched)


def _add_batch_profile(p: argparse.ArgumentParser) -> None:
    from bench.batch_profile import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help="bundle directory")
    p.add_argument("--starts", type=int, default=10, help="fresh processes, one after another")
    p.add_argument("--backend", default="onnxruntime", help="backend kind (auto: the start-up choice too)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--budget-s", type=float, default=5.0, help="the profile's budget (the service's default)")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument(
        "--tuning-cache",
        default=None,
        help="a tuning cache file the starts share (FEWSTEP_TUNING_CACHE): the first measures, the rest reuse; "
        "start from a missing file to include the first measurement",
    )
    p.add_argument("--out", default="results/bench/batch_profile.json", help="JSON path (markdown beside it)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child's mode
    p.set_defaults(handler=_batch_profile)


def _add_memory(p: argparse.ArgumentParser) -> None:
    from bench.memory import DEFAULT_MODELS

    p.add_argument("--bundles", type=Path, default=Path("bundles"))
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per variant (the median is kept)")
    p.add_argument("--out", type=Path, default=Path("results/bench/memory.json"))
    p.set_defaults(handler=_memory)


def _curve(text: str) -> str:
    """A cost curve: a name of `bench.slo.CURVES` or FIXED_MS,PER_ROW_MS."""
    from bench.slo import CURVES

    return text if text in CURVES else _cost(text)


def _add_slo(p: argparse.ArgumentParser) -> None:
    from bench.slo import CURVES, SloBenchConfig

    d = SloBenchConfig()
    p.add_argument(
        "--bundles", nargs="+", default=list(d.bundles), help="the family (manifests read; the first is asked)"
    )
    p.add_argument(
        "--curve",
        type=_curve,
        default=d.curve,
        help=f"the simulated cost per call: {', '.join(CURVES)} or FIXED_MS,PER_ROW_MS",
    )
    p.add_argument("--objective-ms", type=float, default=d.objective_ms, help="the p99 objective, in the curve's time")
    p.add_argument(
        "--loads", nargs="+", type=float, default=list(d.loads), help="mean loads, shares of the 8-step capacity"
    )
    p.add_argument("--seconds", type=float, default=d.seconds, help="trace length per load (curve time)")
    p.add_argument("--burst-ratio", type=float, default=d.burst_ratio, help="burst rate over calm rate")
    p.add_argument("--burst-share", type=float, default=d.burst_share, help="share of the time in bursts")
    p.add_argument("--burst-s", type=float, default=d.burst_s, help="mean burst length (curve time)")
    p.add_argument("--one-object-share", type=float, default=d.one_object_share)
    p.add_argument(
        "--thresholds", nargs="+", type=float, default=list(d.thresholds), help="static rules (x objective x capacity)"
    )
    p.add_argument("--dilation", type=float, default=d.dilation, help="run this many times slower than the curve")
    p.add_argument("--max-batch-images", type=int, help="fixed batch bound (default: from the warm-up profile)")
    p.add_argument("--scheduling", choices=["request", "step"], default=d.scheduling)
    p.add_argument("--headroom", type=float, default=d.headroom)
    p.add_argument("--pressure-start", type=float, default=d.pressure_start)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--profile-budget-s", type=float, default=d.profile_budget_s, help="the warm-up profile's budget per model"
    )
    p.add_argument("--servers", nargs="+", help="only these servers (fixed-8 fixed-4 rule-xM controller ...)")
    p.add_argument(
        "--backend", type=_step_backend, help="serve the bundles on this backend (torch, torch-bf16) instead of --curve"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="with --backend: its device")
    p.add_argument("--out", default="results/bench/slo_cpu", help="directory for slo.json, slo.md and slo.png")
    p.add_argument(
        "--report-only", action="store_true", help="recompute the figures, slo.md and the plot from slo.json"
    )
    p.add_argument(
        "--no-score", action="store_true", help="skip the scoring pass (served adherence predicted from the rows only)"
    )
    p.add_argument(
        "--score-only", action="store_true", help="the scoring pass over the run in --out, then the figures again"
    )
    p.add_argument("--evaluator", default="models/evaluator", help="the evaluator that scores the served images")
    p.add_argument("--score-backend", default="onnxruntime", help="the backend that renders the served images")
    p.add_argument("--score-device", choices=["cpu", "cuda"], help="with a torch --score-backend: its device")
    p.add_argument("--score-threads", type=int, help="CPU threads of the rendering backend (default: all)")
    p.add_argument("--score-batch", type=int, default=32, help="images per render call")
    p.add_argument(
        "--score-share",
        type=float,
        default=1.0,
        help="score this share of the requests (seeded: the same ones at every load)",
    )
    p.set_defaults(handler=_slo)


def _add_soak(p: argparse.ArgumentParser) -> None:
    from bench.soak import SoakConfig

    d = SoakConfig()
    p.add_argument("--bundles", nargs="+", default=list(d.bundles), help="what the server loads (make serve's)")
    p.add_argument("--mix", nargs="+", default=list(d.mix), help="request classes, as `fewstep bench http --mix`")
    p.add_argument("--minutes", type=float, default=d.minutes, help="length of the loaded phase")
    p.add_argument("--load", type=float, default=d.load, help="Poisson arrivals at this share of the measured capacity")
    p.add_argument("--rate", type=float, help="requests/s instead (no capacity phase)")
    p.add_argument("--window-s", type=float, default=d.window_s, help="latency percentiles per window of this length")
    p.add_argument("--sample-s", type=float, default=d.sample_s, help="server RSS and CPU sampled this often")
    p.add_argument("--capacity-clients", type=int, default=d.capacity_clients, help="closed-loop clients for capacity")
    p.add_argument("--capacity-s", type=float, default=d.capacity_s, help="seconds of the capacity phase")
    p.add_argument("--prompts", type=int, default=d.prompts, help="distinct shapes-world captions in the mix")
    p.add_argument("--threads", type=int, help="the server's backend intra-op threads (default: all cores)")
    p.add_argument("--backend", default=d.backend, help="'auto' (as make serve), a kind or a 'kind-precision' path")
    p.add_argument("--set", nargs="*", metavar="FEWSTEP_NAME=VALUE", help="more settings for the server")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--machine", help="the results' file name (default: CPU model and cores, e.g. amd-epyc-7b13-2c)")
    p.add_argument("--out", default="results/soak", help="directory for <machine>.json, <machine>.md and the log")
    p.add_argument("--strict", action="store_true", help="exit 1 when a check (rule of thumb) is not met")
    p.set_defaults(handler=_soak)


def _add_sim_server(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cost-ms", type=_cost, required=True, help="FIXED_MS,PER_ROW_MS: one denoiser call's cost")
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--scheduling", choices=["request", "step"], default="request")
    p.add_argument("--max-batch-images", type=int)
    p.add_argument("--max-wait-s", type=float)
    p.add_argument("--log-level", default="info")
    p.set_defaults(handler=_sim_server)


def _add_peer_server(p: argparse.ArgumentParser) -> None:
    # No import of bench.peer_litserve here: it needs LitServe (the optional `peer` extra).
    p.add_argument("--bundle", required=True)
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--kind", default="onnxruntime", help="backend kind (as FEWSTEP_BACKEND__KIND, not 'auto')")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-timeout", type=float, default=0.005)
    p.set_defaults(handler=_peer_server)
