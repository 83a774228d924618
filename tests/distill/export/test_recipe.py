"""Export recipes (distill.export.recipe): their sidecar keys, the choices refused, and the
lowerings other than the default keeping the parity bound."""

import pytest

from distill.export.bundle import PARITY_TOL
from distill.export.recipe import CURRENT, LEGACY, Recipe, recipe
from tests.conftest import make_packed_model
from tests.distill.conftest import op_histogram


def test_recipes_have_distinct_keys_naming_what_differs():
    assert LEGACY.key == "1" and recipe(legacy=True) is LEGACY
    assert recipe() == CURRENT
    keys = {recipe("instance").key, recipe("onnx").key, LEGACY.key}
    assert len(keys) == 3 and "gn:onnx" in recipe("onnx").key
    assert Recipe(2, 23, "instance", fused_attention=False).key != CURRENT.key


def test_an_unknown_group_norm_form_is_refused():
    with pytest.raises(ValueError, match="group_norm must be 'instance' or 'onnx'"):
        recipe("batch")  # type: ignore[arg-type]


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
@pytest.mark.parametrize(("form", "legacy"), [("onnx", False), ("instance", True)])
def test_other_recipes_keep_the_parity_bound(tmp_path, tiny_bert_dir, form, legacy):
    """recipe(group_norm='onnx'): one GroupNormalization op per GroupNorm (opset 21+), for runtimes
    with a kernel for it (OpenVINO, TensorRT); the legacy recipe stays exportable for benchmarks."""
    from distill.export.bundle import DenoiserGraph, export_onnx, onnx_parity
    from distill.kit.checkpoint import load_denoiser
    from fewstep.bundle import denoiser_graph

    model_dir = make_packed_model(tmp_path / "model", tiny_bert_dir)
    model, cfg = load_denoiser(model_dir)
    mc = cfg.model
    spec = denoiser_graph(
        mc.resolution, mc.in_channels, cfg.text.max_tokens, mc.text_dim, mc.guidance_input, max_batch=8
    )
    graph = tmp_path / "d.onnx"
    export_onnx(DenoiserGraph(model), spec, graph, recipe=recipe(form, legacy=legacy))
    ops = op_histogram(graph)
    if legacy:
        assert "Attention" not in ops and ops.get("Softmax", 0) >= 1
    else:
        assert ops.get("GroupNormalization", 0) >= 1 and "InstanceNormalization" not in ops
        assert ops.get("Attention", 0) >= 1
    assert onnx_parity(DenoiserGraph(model), spec, graph) <= PARITY_TOL
