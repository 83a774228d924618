import json

import numpy as np
import pytest

from fewstep.bundle import (
    BundleError,
    GraphSpec,
    GuidanceSpec,
    Manifest,
    TensorSpec,
    TextSpec,
    load_manifest,
    step_schedules,
    write_manifest,
)
from fewstep.schedule import step_plan


def _bundle(tmp_path):
    (tmp_path / "denoiser.onnx").write_bytes(b"denoiser graph")
    (tmp_path / "text_encoder.onnx").write_bytes(b"text graph")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    z = TensorSpec(name="z", dtype="float32", shape=("batch", 3, 32, 32))
    manifest = Manifest(
        name="teacher",
        resolution=32,
        steps=step_schedules([4, 8]),
        default_steps=4,
        guidance=GuidanceSpec(min=1, max=7, default=3),
        text=TextSpec(name="minilm", max_tokens=28, hidden=384, tokenizer_files=("tokenizer/tokenizer.json",)),
        graphs={
            "denoiser": GraphSpec(file="denoiser.onnx", inputs=(z,), outputs=(z.model_copy(update={"name": "x_hat"}),)),
            "text_encoder": GraphSpec(file="text_encoder.onnx", inputs=(), outputs=()),
        },
    )
    write_manifest(tmp_path, manifest)
    return tmp_path


def test_round_trip_keeps_the_float64_plans(tmp_path):
    m = load_manifest(_bundle(tmp_path))
    assert set(m.files) == {"denoiser.onnx", "text_encoder.onnx", "tokenizer/tokenizer.json"}
    plan, ref = m.plan(8), step_plan(8)
    for k in ("t", "c_z", "c_x", "std", "alpha_s"):
        np.testing.assert_array_equal(getattr(plan, k), getattr(ref, k))
    with pytest.raises(BundleError, match=r"supports steps \[4, 8\]"):
        m.plan(3)


def test_tampered_file_is_named(tmp_path):
    b = _bundle(tmp_path)
    (b / "denoiser.onnx").write_bytes(b"evil graph")
    with pytest.raises(BundleError, match=r"denoiser\.onnx does not match"):
        load_manifest(b)
    assert load_manifest(b, verify=False).name == "teacher"


def test_missing_file_is_named(tmp_path):
    b = _bundle(tmp_path)
    (b / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"tokenizer/tokenizer\.json is missing"):
        load_manifest(b)


def test_invalid_manifest_names_the_key(tmp_path):
    b = _bundle(tmp_path)
    data = json.loads((b / "manifest.json").read_text())
    data["default_steps"] = 16
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="default_steps 16"):
        load_manifest(b)
    data["default_steps"] = 4
    data["guidance"]["max"] = "lots"
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"guidance\.max"):
        load_manifest(b)
    with pytest.raises(BundleError, match="not a bundle"):
        load_manifest(tmp_path / "nowhere")


def test_a_shortcut_denoiser_serves_power_of_two_step_counts_only(tmp_path):
    from fewstep.bundle import STEP_SIZE_INPUT, denoiser_graph

    b = _bundle(tmp_path)
    data = json.loads((b / "manifest.json").read_text())
    graph = denoiser_graph(32, 3, 28, 384, network_input=True, step_size_input=True)
    assert [i.name for i in graph.inputs] == ["z", "t", "text_states", "text_mask", "w", STEP_SIZE_INPUT]
    data["graphs"]["denoiser"] = graph.model_copy(update={"file": "denoiser.onnx"}).model_dump(mode="json")
    data["steps"] = {str(k): v.model_dump(mode="json") for k, v in step_schedules([1, 2, 4]).items()}
    data["default_steps"] = 4
    (b / "manifest.json").write_text(json.dumps(data))
    m = load_manifest(b)
    assert m.takes_step_size and sorted(m.steps) == [1, 2, 4]
    data["steps"] = {str(k): v.model_dump(mode="json") for k, v in step_schedules([3, 4]).items()}
    (b / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"steps \[3\]: a shortcut denoiser"):
        load_manifest(b)
    (tmp_path / "teacher").mkdir()
    assert not load_manifest(_bundle(tmp_path / "teacher")).takes_step_size
