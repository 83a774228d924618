"""The benchmarked paths (bench.paths): extra step counts, and the derived graphs computing the bundle's function."""

import numpy as np
import pytest

from bench.paths import PATHS, make_path_denoiser, with_steps
from fewstep.bundle import load_manifest
from fewstep.schedule import step_plan


def test_with_steps_adds_the_exporters_plan(tiny_bundle):
    m = load_manifest(tiny_bundle)
    m3 = with_steps(m, [3, 4])
    assert sorted(m3.steps) == sorted({*m.steps, 3})
    np.testing.assert_array_equal(m3.plan(3).c_x, step_plan(3).c_x)
    assert with_steps(m, [2]) is m


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
