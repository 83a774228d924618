import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from distill.export.bundle import PARITY_TOL, ExportOptions, export_bundle
from distill.export.recipe import CURRENT, LEGACY
from fewstep.bundle import BundleError, load_manifest
from tests.conftest import make_packed_model
from tests.distill.conftest import op_histogram


def test_bundle_round_trip(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert {
        "denoiser.onnx",
        "text_encoder.onnx",
        "tokenizer.json",
        "torch/model.safetensors",
        "torch/unet.json",
    } <= set(m.files)
    assert sorted(m.steps) == [2, 4] and m.default_steps == 2
    assert not m.guidance.network_input
    assert 0 < m.parity["denoiser_max_abs"] <= PARITY_TOL
    assert 0 < m.parity["text_encoder_max_abs"] <= PARITY_TOL
    # The graph's I/O is the declaration's, with 'batch' dynamic.
    for key in ("denoiser", "text_encoder"):
        spec = m.graphs[key]
        sess = ort.InferenceSession(str(tiny_bundle / spec.file), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == [i.name for i in spec.inputs]
        assert [o.name for o in sess.get_outputs()] == [o.name for o in spec.outputs]
        assert sess.get_inputs()[0].shape[0] == "batch"
    # float64 posterior coefficients travel unchanged.
    from fewstep.schedule import step_plan

    np.testing.assert_array_equal(m.plan(4).c_x, step_plan(4).c_x)


def test_student_bundle_declares_w(tiny_student_bundle):
    m = load_manifest(tiny_student_bundle)
    assert m.guidance.network_input
    assert [i.name for i in m.graphs["denoiser"].inputs][-1] == "w"


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
def test_committed_graph_is_reused_until_the_weights_change(tmp_path, tiny_bert_dir):
    model = make_packed_model(tmp_path / "model", tiny_bert_dir)
    export_bundle(model, tmp_path / "b1", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache"))
    side = json.loads((model / "denoiser.onnx.json").read_text())
    stamp = (model / "denoiser.onnx").stat().st_mtime_ns
    export_bundle(model, tmp_path / "b2", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache"))
    assert (model / "denoiser.onnx").stat().st_mtime_ns == stamp  # reused, not re-exported
    make_packed_model(model, tiny_bert_dir, seed=5)  # new weights
    m3 = export_bundle(model, tmp_path / "b3", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache"))
    side3 = json.loads((model / "denoiser.onnx.json").read_text())
    assert side3["weights_sha256"] != side["weights_sha256"]
    assert m3.files["denoiser.onnx"] == side3["graph_sha256"] != side["graph_sha256"]


def test_export_replaces_an_existing_bundle(tmp_path, tiny_bert_dir, onnx_cache):
    model = make_packed_model(tmp_path / "model", tiny_bert_dir)
    out = tmp_path / "b"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    export_bundle(model, out, ExportOptions(steps=(2, 4), cache_dir=onnx_cache))
    assert not (out / "stale.txt").exists()
    assert sorted(load_manifest(out).steps) == [2, 4]


def test_a_re_export_keeps_a_precision_measurement_only_of_the_same_denoiser_graph(tmp_path, tiny_bert_dir):
    """`scripts.precision` writes the measured bf16 permission into the manifest and into
    results/precision/NAME.json; a re-export of the same graph keeps it (from the old bundle or from
    `--precision`), new weights drop it (kind=auto then serves fp32)."""
    import dataclasses

    from fewstep.bundle import write_manifest
    from service.fakes import precision_check

    model = make_packed_model(tmp_path / "model", tiny_bert_dir)
    out, options = tmp_path / "b", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache")
    m = export_bundle(model, out, options)
    check = precision_check(denoiser_sha256=m.files["denoiser.onnx"])
    write_manifest(out, m.model_copy(update={"reduced_precision": {check.label: check}}))
    again = export_bundle(model, out, options)
    assert again.reduced_precision == {check.label: check} and check.measured_graph_of(again)
    # a fresh directory, the committed measurement given (`fewstep export --precision`)
    stale = precision_check("torch-bf16", denoiser_sha256="0ld")
    given = export_bundle(model, tmp_path / "fresh", dataclasses.replace(options, reduced_precision=(check, stale)))
    assert given.reduced_precision == {check.label: check}
    make_packed_model(model, tiny_bert_dir, seed=5)  # new weights: a new graph
    assert export_bundle(model, out, options).reduced_precision == {}


def test_export_cli_reads_precision_measurements_and_refuses_a_bad_file(tmp_path):
    from distill.cli.export import _precision_checks
    from service.fakes import precision_check

    c = precision_check(denoiser_sha256="abc")
    (tmp_path / "m.json").write_text(json.dumps({c.label: c.model_dump(mode="json")}))
    assert _precision_checks([str(tmp_path / "m.json")]) == [c]
    (tmp_path / "bad.json").write_text(json.dumps({c.label: {**c.model_dump(mode="json"), "passed": False}}))
    with pytest.raises(SystemExit, match="not a precision measurement file"):
        _precision_checks([str(tmp_path / "bad.json")])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "denoiser.onnx").write_bytes(b"not a graph"), "denoiser.onnx does not match its sha256"),
        (lambda b: (b / "tokenizer.json").unlink(), "tokenizer.json is missing"),
        (lambda b: (b / "torch" / "model.safetensors").unlink(), "torch/model.safetensors is missing"),
    ],
)
def test_a_damaged_bundle_is_refused_naming_the_file(tmp_path, tiny_bundle, damage, message):
    from service.loader import load_pipeline

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    damage(bundle)
    with pytest.raises(BundleError, match=message):
        load_pipeline(bundle)


def test_export_cli(tmp_path, tiny_bert_dir, onnx_cache, capsys):
    from fewstep_cli.main import main

    model = make_packed_model(tmp_path / "model", tiny_bert_dir)
    row = {"sampler": "ancestral", "steps": 4, "guidance": 3.0, "fd": 12.5, "adherence": {"overall": 0.5}}
    (tmp_path / "row.json").write_text(json.dumps(row))
    args = ["export", "--model", str(model), "--out", str(tmp_path / "b"), "--steps", "2", "4", "--default-steps", "4"]
    args += ["--guidance", "1", "2.5", "6", "--evaluation", str(tmp_path / "row.json")]
    args += ["--cache-dir", str(onnx_cache)]
    assert main(args) == 0
    m = load_manifest(tmp_path / "b")
    assert m.name == "b" and m.default_steps == 4
    assert (m.guidance.min, m.guidance.default, m.guidance.max) == (1.0, 2.5, 6.0)
    assert m.evaluation["ancestral-4-w3"]["fd"] == 12.5
    assert main(["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "c")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_the_bundle_graph_uses_fused_attention_and_no_masking_glue(tiny_bundle):
    m = load_manifest(tiny_bundle)
    assert m.source["graph_recipe"] == CURRENT.key
    ops = op_histogram(tiny_bundle / "denoiser.onnx")
    assert ops.get("Attention", 0) >= 1
    # the decomposed SDPA's pieces are gone: no Softmax, no Where/IsNaN masking pattern
    assert not {"Softmax", "Where", "IsNaN"} & set(ops)
    # GroupNorm: the InstanceNormalization pattern, the form ORT's CPU provider runs as a kernel
    assert ops.get("InstanceNormalization", 0) >= 1 and "GroupNormalization" not in ops


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
def test_a_graph_of_another_recipe_is_not_reused(tmp_path, tiny_bert_dir):
    """A committed graph from before recipes (sidecar without one) is re-exported, not served."""
    model = make_packed_model(tmp_path / "model", tiny_bert_dir)
    export_bundle(model, tmp_path / "b1", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache"))
    side_file = model / "denoiser.onnx.json"
    side = json.loads(side_file.read_text())
    assert side["recipe"] == CURRENT.key
    stale = {k: v for k, v in side.items() if k != "recipe"}  # what the committed sidecars looked like
    side_file.write_text(json.dumps(stale))
    stamp = (model / "denoiser.onnx").stat().st_mtime_ns
    m = export_bundle(model, tmp_path / "b2", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache"))
    assert (model / "denoiser.onnx").stat().st_mtime_ns != stamp
    assert json.loads(side_file.read_text())["recipe"] == CURRENT.key
    assert m.source["graph_recipe"] == CURRENT.key
    # a benchmark's legacy export goes to scratch and leaves the committed graph alone
    stamp = (model / "denoiser.onnx").stat().st_mtime_ns
    legacy = export_bundle(
        model, tmp_path / "b3", ExportOptions(steps=(2,), cache_dir=tmp_path / "cache", recipe=LEGACY)
    )
    assert legacy.source["graph_recipe"] == "1" and "Softmax" in op_histogram(tmp_path / "b3" / "denoiser.onnx")
    assert (model / "denoiser.onnx").stat().st_mtime_ns == stamp


def test_export_time_follows_source_date_epoch(monkeypatch):
    from datetime import UTC, datetime

    from distill.export.bundle import export_time

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert export_time() == datetime.fromtimestamp(1700000000, tz=UTC)
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert abs((datetime.now(UTC) - export_time()).total_seconds()) < 5
