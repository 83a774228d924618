"""Online subcommands: `fewstep serve`.

Command-line flags override the `FEWSTEP_*` environment (see `service.settings`); anything not
given on the command line comes from the environment or the defaults.

The service's log is meant to be read: probe requests (/healthz, /readyz, /metrics, polled every
few seconds by load balancers and Prometheus) stay out of the access log, third-party libraries
speak only at WARNING, and the last start-up line says where the playground, docs and metrics are.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Libraries that log progress at INFO (ONNX export and optimisation, model loading, HTTP clients):
# their detail belongs to the offline tools, not to the service's log.
THIRD_PARTY_LOGGERS = ("onnxscript", "onnx_ir", "torch", "transformers", "huggingface_hub", "httpx", "httpcore")


class ProbeFilter(logging.Filter):
    """Drops uvicorn access-log records of the probe routes (their answers are in /metrics)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        path = str(args[2]).split("?", 1)[0] if len(args) >= 3 else ""
        return path not in PROBE_PATHS


def quiet_logging(level: str = "info") -> None:
    """The service's log: no probe lines, third-party loggers at WARNING (unless debugging)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, ProbeFilter) for f in access.filters):
        access.addFilter(ProbeFilter())
    if level not in ("debug", "trace"):
        for name in THIRD_PARTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve model bundles over HTTP (uvicorn, one worker)",
        description="Serve bundles: POST /generate, /v1/images/generations, /metrics, / (playground). "
        "Every option can also be set as a FEWSTEP_* environment variable.",
    )
    p.add_argument("--bundles", nargs="+", type=Path, help="bundle directories or folders of bundles")
    p.add_argument("--model", dest="default_model", help="model used when a request names none")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument(
        "--backend",
        dest="backend_kind",
        choices=["onnxruntime", "openvino", "tensorrt", "torch", "auto"],
        help="auto: time the candidates at start-up and serve the fastest the bundle's quality record allows",
    )
    p.add_argument("--precision", dest="backend_precision", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, help="backend intra-op threads (CPU)")
    p.add_argument("--max-batch-images", type=int)
    p.add_argument("--max-wait-s", type=float)
    p.add_argument("--scheduling", choices=["request", "step"], help="batch whole requests or sampler steps")
    p.add_argument(
        "--slo-p99-ms",
        type=float,
        help="latency objective (FEWSTEP_SLO__P99_MS): requests hinted auto move to a cheaper model of the "
        "family when predicted to finish later (docs/slo.md)",
    )
    p.add_argument("--queue-limit-images", type=int)
    p.add_argument("--request-timeout-s", type=float)
    p.add_argument("--drain-timeout-s", type=float)
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(handler=_serve)


def settings_from_args(args: argparse.Namespace):
    """ServiceSettings from the environment with the flags that were given on top."""
    from service.settings import load_settings

    fields = (
        "bundles",
        "default_model",
        "host",
        "port",
        "max_batch_images",
        "max_wait_s",
        "scheduling",
        "queue_limit_images",
        "request_timeout_s",
        "drain_timeout_s",
        "log_level",
    )
    overrides: dict[str, Any] = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    backend = {
        "kind": args.backend_kind,
        "precision": getattr(args, "backend_precision", None),
        "device": args.device,
        "threads": args.threads,
    }
    backend = {k: v for k, v in backend.items() if v is not None}
    if backend:
        overrides["backend"] = backend
    if getattr(args, "slo_p99_ms", None) is not None:
        overrides["slo"] = {"p99_ms": args.slo_p99_ms}
    return load_settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    from service.app import discover_bundles
    from service.server import serve

    settings = settings_from_args(args)
    discover_bundles(settings.bundles)  # a missing bundle folder fails here, naming FEWSTEP_BUNDLES
    quiet_logging(settings.log_level)
    return serve(settings)
