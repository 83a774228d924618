"""Serving cost of candidate denoisers: parameters, FLOPs per evaluation and ONNX Runtime CPU time.

An architecture choice for the teacher is also a serving choice (every student inherits the
network), so the teacher ablation reports each variant's cost beside its quality. Each model is
exported with the project's export path (`distill.export.bundle.denoiser_onnx`, parity-checked) into a
scratch directory, and all sessions are timed in interleaved rounds (one timing of each model per
round, medians over rounds), so a slow spell of a shared machine hits every variant alike.

    fewstep bench model-cost runs/teacher-ablation/*/model --out results/teacher_ablation/cost.json
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.measure import denoiser_flops

log = logging.getLogger(__name__)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def measure(models: list[Path], batch: int = 16, rounds: int = 7, threads: int = 1) -> dict[str, Any]:
    """{name: {params, gflop_per_eval, ort_ms_per_eval, ...}} for each packed model directory."""
    from distill.export.bundle import denoiser_onnx, example_inputs
    from distill.kit.checkpoint import load_denoiser
    from fewstep.bundle import denoiser_graph
    from fewstep.networks import count_params

    out: dict[str, Any] = {}
    runs: dict[str, tuple[Any, dict[str, np.ndarray]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for m in models:
            name = m.parent.name if m.name == "model" else m.name
            model, cfg = load_denoiser(m)
            mc = cfg.model
            spec = denoiser_graph(mc.resolution, mc.in_channels, cfg.text.max_tokens, mc.text_dim, mc.guidance_input)
            # Never write beside the weights: a candidate's graph is a measurement, not an artefact.
            graph, parity = denoiser_onnx(Path(scratch) / name, model, spec, Path(scratch) / name)
            flops = denoiser_flops(model, 2, mc.in_channels, mc.resolution, cfg.text.max_tokens, mc.text_dim)
            feeds = {i.name: a.numpy() for i, a in zip(spec.inputs, example_inputs(spec, batch, seed=1), strict=True)}
            runs[name] = (_session(graph, threads), feeds)
            out[name] = {
                "params": count_params(model),
                "gflop_per_eval": flops["per_image"] / 1e9,
                "onnx_parity": parity,
                "times_ms": [],
            }
        for sess, feeds in runs.values():  # warm-up
            sess.run(None, feeds)
        for _ in range(rounds):
            for name, (sess, feeds) in runs.items():
                t0 = time.perf_counter()
                sess.run(None, feeds)
                out[name]["times_ms"].append(1e3 * (time.perf_counter() - t0) / batch)
    for row in out.values():
        row["ort_ms_per_eval"] = statistics.median(row["times_ms"])
    return {"batch": batch, "threads": threads, "rounds": rounds, "models": out}


def cost_table(models: list[Path], batch: int = 16, rounds: int = 7, threads: int = 1) -> dict[str, Any]:
    """`measure`'s figures with the machine they were taken on, each model's logged."""
    from distill.evaluation.evaluate import machine

    result = {**measure(models, batch, rounds, threads), "machine": machine()}
    for name, row in result["models"].items():
        log.info(
            "%s: %.2fM params, %.3f GFLOP/eval, ORT %.2f ms/eval (batch %d)",
            name,
            row["params"] / 1e6,
            row["gflop_per_eval"],
            row["ort_ms_per_eval"],
            batch,
        )
    return result
