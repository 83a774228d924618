"""Loading a bundle for serving (service.loader): which backend and precision, shared text encoders."""

import json

import numpy as np
import pytest

from service.backends.base import BackendError, BackendSettings
from service.fakes import fake_manifest
from service.loader import backend_label, denoiser_inputs, make_denoiser, resolve_precision
from tests.defaults import student

K4 = student(4)  # the default 4-step student


def test_auto_precision_is_the_bundles_recommendation_for_that_backend_else_fp32():
    m = fake_manifest().model_copy(update={"precision": {"openvino": "bf16"}})
    assert resolve_precision(m, BackendSettings(kind="openvino")) == "bf16"
    assert resolve_precision(m, BackendSettings(kind="torch")) == "fp32"
    assert resolve_precision(m, BackendSettings(kind="openvino", precision="fp32")) == "fp32"  # pinned wins


def test_the_backend_label_says_what_auto_chose():
    assert backend_label(BackendSettings(kind="openvino")) == "openvino"
    assert backend_label(BackendSettings(kind="auto"), "openvino-bf16") == "auto:openvino-bf16"


@pytest.mark.parametrize("network_input", [False, True])
def test_denoiser_inputs_have_the_declared_shapes_and_valid_values(network_input):
    m = fake_manifest(network_input=network_input, max_tokens=8, hidden=4, resolution=8)
    inputs = denoiser_inputs(m, 5, seed=1)
    specs = m.graphs["denoiser"].inputs
    assert [i.shape for i in inputs] == [tuple(5 if d == "batch" else int(d) for d in s.shape) for s in specs]
    named = {s.name: a for s, a in zip(specs, inputs, strict=True)}
    assert ("w" in named) == network_input
    mask = named["text_mask"]
    assert mask.dtype == np.int64 and set(np.unique(mask)) <= {0, 1}
    assert (mask.sum(1) >= 2).all() and (np.diff(mask, axis=1) <= 0).all()  # a prefix of at least 2 tokens
    assert ((named["t"] >= 0) & (named["t"] < 1)).all()
    np.testing.assert_array_equal(denoiser_inputs(m, 5, seed=1)[0], inputs[0])
    assert not np.array_equal(denoiser_inputs(m, 5, seed=2)[0], inputs[0])


def test_onnxruntime_refuses_a_reduced_precision(tiny_bundle):
    from fewstep.bundle import load_manifest

    m = load_manifest(tiny_bundle)
    with pytest.raises(BackendError, match="onnxruntime serves fp32"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="onnxruntime", precision="int8"))


def test_bundles_with_identical_text_encoders_share_one_session_and_prompt_cache(default_bundles):
    from fewstep.bundle import load_manifest
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline, load_prompt_encoder

    shared: dict = {}
    teacher = load_pipeline(default_bundles / "teacher", warmup=(), shared_text=shared)
    student = load_pipeline(default_bundles / K4, warmup=(), shared_text=shared)
    assert student.prompts is teacher.prompts and len(shared) == 1
    teacher.prompts(["a red circle at the top"])
    hits = student.prompts.hits
    student.prompts(["a red circle at the top"])  # encoded for the teacher: a hit for the student
    assert student.prompts.hits == hits + 1
    alone = load_pipeline(default_bundles / K4, warmup=())
    assert alone.prompts is not teacher.prompts
    own, via_shared = alone.prompts(["a blue square on the left"]), student.prompts(["a blue square on the left"])
    np.testing.assert_array_equal(own[0], via_shared[0])
    # another text encoder (another sha256) gets its own session
    m = load_manifest(default_bundles / K4)
    other = m.model_copy(update={"files": {**m.files, m.graphs["text_encoder"].file: "0" * 64}})
    assert load_prompt_encoder(default_bundles / K4, other, BackendSettings(), shared) is not teacher.prompts
    assert len(shared) == 2


def test_a_loaded_pipeline_names_what_a_tuning_cache_keys_its_measurements_by(tiny_bundle, tmp_path):
    """The bundle's hashes, the resolved backend path (not `auto` or a bare kind) and the backend
    settings that change its speed: what `service.engine.profile.tuned_costs` keys a profile by."""
    from fewstep.bundle import load_manifest
    from service.loader import load_pipeline
    from service.tuning import TuningCache, bundle_identity

    p = load_pipeline(tiny_bundle, BackendSettings(kind="onnxruntime", threads=1), warmup=())
    assert p.identity["bundle"] == bundle_identity(load_manifest(tiny_bundle).files)
    assert p.identity["path"] == "onnxruntime-fp32" and p.identity["backend"]["threads"] == 1
    auto = BackendSettings(kind="auto", auto_candidates=("onnxruntime-fp32", "openvino-fp32"), auto_batch_images=2)
    tuning = TuningCache(tmp_path / "tuning.json")
    first = load_pipeline(tiny_bundle, auto, warmup=(), tuning=tuning)
    again = load_pipeline(tiny_bundle, auto, warmup=(), tuning=tuning)
    assert first.identity["path"] == first.backend.removeprefix("auto:") == again.identity["path"]
    assert len(json.loads((tmp_path / "tuning.json").read_text())["entries"]) == 1  # the timings, kept once
