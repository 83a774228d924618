"""The sampler benchmark on a tiny real bundle: rows, ratios, tables, reduced-precision paths."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from bench.paths import PATHS, make_path_denoiser, with_steps
from bench.sampler import markdown, run_sampler_bench, write_results
from fewstep.bundle import load_manifest
from fewstep.schedule import step_plan


def test_with_steps_adds_the_exporters_plan(tiny_bundle):
    m = load_manifest(tiny_bundle)
    m3 = with_steps(m, [3, 4])
    assert sorted(m3.steps) == sorted({*m.steps, 3})
    np.testing.assert_array_equal(m3.plan(3).c_x, step_plan(3).c_x)
    assert with_steps(m, [2]) is m


def test_runner_rows_and_tables(tiny_bundle, tmp_path):
    lines = []
    doc = run_sampler_bench(
        tiny_bundle,
        ["onnxruntime-fp32", "torch-fp32"],
        batches=(1, 3),
        steps=(2, 3),
        min_repeats=2,
        min_cell_seconds=0.0,
        peak_size=64,
        report=lines.append,
    )
    rows = doc["rows"]
    assert len(rows) == 3 * 2 * 2  # two paths and the identity denoiser, 2 batches x 2 K
    for r in rows:
        assert r["images_per_s"] > 0 and r["repeats"] == 2 and len(r["times_s"]) == 2
        assert r["evals_per_image"] == 2 * r["steps"]  # a teacher: guidance doubles the batch
        if r["path"] != "sampler-only":
            assert r["gflops"] == pytest.approx(r["images_per_s"] * r["flops_per_image"] / 1e9)
            assert 0 < r["frac_bf16_peak"]
    assert doc["flops_per_eval_per_image"]["per_image"] > 0
    assert len(doc["matmul_peak_gflops"]["runs"]["fp32"]) == 2  # start and end of the run
    ratios = doc["ratios"]["ort_vs_torch_fp32"]
    assert {(x["steps"], x["batch"]) for x in ratios} == {(2, 1), (2, 3), (3, 1), (3, 3)}
    assert all(x["path"] != "sampler-only" for x in doc["ratios"]["fastest_at_max_batch"])
    md = markdown(doc)
    assert "| onnxruntime-fp32 |" in md and "**K = 3**" in md
    j, m = write_results(doc, tmp_path / "s.json")
    assert json.loads(j.read_text())["rows"][0]["path"] == rows[0]["path"]
    assert m.read_text() == md


def test_ort_reduced_precision_paths_run(tiny_bundle):
    from service.loader import denoiser_inputs

    m = load_manifest(tiny_bundle)
    x = denoiser_inputs(m, 4)
    ref = make_path_denoiser(PATHS["onnxruntime-fp32"], tiny_bundle, m)(*x)
    for name in ("onnxruntime-int8", "onnxruntime-fp16"):
        got = make_path_denoiser(PATHS[name], tiny_bundle, m)(*x)
        assert got.shape == ref.shape and got.dtype == np.float32 and np.isfinite(got).all()
        assert np.abs(got - ref).max() < 0.5 * np.abs(ref).max() + 0.1, name  # same function, coarser maths
    assert (tiny_bundle.parent / ".cache" / "bench").is_dir()  # derived graphs cached beside the bundles


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
def test_legacy_graph_and_openvino_paths_match_the_bundle_graph(tiny_bundle):
    """The old export recipe's graph (for before/after figures) and the OpenVINO paths compute the
    same function as the bundle's graph."""
    import onnx

    from bench.paths import legacy_graph
    from service.backends.openvino import openvino_available
    from service.loader import denoiser_inputs

    m = load_manifest(tiny_bundle)
    x = denoiser_inputs(m, 3)
    ref = make_path_denoiser(PATHS["onnxruntime-fp32"], tiny_bundle, m)(*x)
    legacy = make_path_denoiser(PATHS["onnxruntime-fp32-legacy"], tiny_bundle, m)
    assert np.abs(legacy(*x) - ref).max() <= 1e-4
    ops = {n.op_type for n in onnx.load(str(legacy_graph(tiny_bundle, m))).graph.node}
    assert "Softmax" in ops and "Attention" not in ops  # really the old lowering
    assert not PATHS["onnxruntime-fp32-legacy"].native and PATHS["openvino-bf16"].native
    if openvino_available():
        got = make_path_denoiser(PATHS["openvino-fp32"], tiny_bundle, m)(*x)
        assert np.abs(got - ref).max() <= 1e-4
