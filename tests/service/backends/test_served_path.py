"""The paths the service may serve on the real default bundles (bundles/, `make bundles`) against
ONNX Runtime fp32, the reference path: the same prompts, seeds, steps and guidance through the
whole pipeline (text encoder, sampler, image conversion), final 8-bit images compared.

The tolerance is the one a reduced precision must meet to be served at all
(`fewstep.bundle.MAX_PIXEL_MEAN_ABS`: 4 of 255 levels on average over all pixels), and no single
image may move by more than 3 times that on average: a broken path (NaN, garbage, a wrong
precision hint) moves images by tens of levels. fp32 on another runtime must agree far more
tightly (1 level on average). OpenVINO bf16 runs only on a CPU with native bf16 (AMX or AVX-512
BF16; this project's 2-core AMD EPYC VM has AVX-512 BF16) and skips with that reason elsewhere.

Slow (three bundles on three paths, about 4 minutes on that VM while it trains): `make test-slow`,
which .ci/run runs."""

from __future__ import annotations

import numpy as np
import pytest

import shapesworld as shapes
from fewstep.bundle import MAX_PIXEL_MEAN_ABS
from service.backends.base import BackendSettings
from service.pipeline import ImageJob
from tests.defaults import default_model, students
from tests.service.backends.conftest import NO_OPENVINO, NO_OV_BF16

pytestmark = pytest.mark.slow

N_IMAGES = 8
MODELS = ["teacher", *students()]


def images(bundle, settings: BackendSettings) -> tuple[np.ndarray, str]:
    from service.loader import load_pipeline

    p = load_pipeline(bundle, settings, warmup=())
    m = p.manifest
    jobs = [
        ImageJob(shapes.sample(11, i).caption, 700 + i, m.default_steps, m.guidance.default) for i in range(N_IMAGES)
    ]
    return p.generate(jobs).astype(np.float64), p.backend


@pytest.fixture(scope="module")
def reference(default_bundles):
    """Each default model's images on ONNX Runtime fp32 (computed once for the module)."""
    return {
        name: images(default_bundles / name, BackendSettings(kind="onnxruntime", precision="fp32"))[0]
        for name in MODELS
    }


@pytest.mark.parametrize(
    ("path", "mean_limit"),
    [
        pytest.param("openvino-fp32", 1.0, marks=NO_OPENVINO, id="openvino-fp32"),
        pytest.param("openvino-bf16", MAX_PIXEL_MEAN_ABS, marks=[NO_OPENVINO, NO_OV_BF16], id="openvino-bf16"),
    ],
)
@pytest.mark.parametrize("model", MODELS)
def test_a_servable_path_draws_what_onnxruntime_fp32_draws(default_bundles, reference, model, path, mean_limit):
    kind, precision = path.split("-")
    served, _ = images(default_bundles / model, BackendSettings(kind=kind, precision=precision))
    ref = reference[model]
    assert served.shape == ref.shape and np.isfinite(served).all()
    diff = np.abs(served - ref)
    per_image = diff.reshape(len(diff), -1).mean(1)
    assert diff.mean() <= mean_limit, f"{model} {path}: mean {diff.mean():.2f} levels (limit {mean_limit})"
    assert per_image.max() <= 3 * mean_limit, f"{model} {path}: per image {np.round(per_image, 2)}"
    if precision == "bf16":
        assert diff.max() > 0  # the precision took effect: bf16 is not bit-equal to fp32


def test_what_auto_serves_on_the_default_model_draws_what_onnxruntime_fp32_draws(default_bundles, reference):
    """kind=auto (make serve, the image, compose and Kubernetes): whichever path it picks on this
    machine, within the served tolerance of the reference."""
    model = default_model()
    served, label = images(default_bundles / model, BackendSettings(kind="auto"))
    assert label.startswith("auto:")
    diff = np.abs(served - reference[model])
    assert diff.mean() <= MAX_PIXEL_MEAN_ABS, f"{label}: mean {diff.mean():.2f} levels"
