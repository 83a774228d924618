"""The reduced-precision measurement (scripts.precision): its figures, the rule, the manifests it writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fewstep.bundle import MAX_ADHERENCE_DROP, PrecisionCheck, load_manifest, sha256_file
from scripts.precision import check, compare, fixed_prompts, measure, record, write_results
from tests.defaults import students

ROOT = Path(__file__).resolve().parents[2]
BUNDLES, RESULTS = ROOT / "bundles", ROOT / "results" / "precision"


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def test_compare_gives_the_pixel_difference_and_the_paired_adherence_drop():
    ref = _images(100, 0)
    hits = np.arange(100) % 10 != 0  # 0.9
    same = compare(ref, ref.copy(), hits, hits)
    assert same["pixel_mean_abs"] == same["pixel_max_abs"] == same["images_moved"] == 0.0
    assert same["adherence_drop"] == 0.0 and same["adherence_drop_ci"] == (0.0, 0.0)
    worse = hits & (np.arange(100) % 10 != 1)  # 0.8: ten prompts lost, none gained
    moved = ref.astype(np.int16)
    moved[:5] = 255 - moved[:5]
    fig = compare(ref, moved.astype(np.uint8), hits, worse)
    assert fig["adherence_drop"] == pytest.approx(0.1) and 0.03 < fig["adherence_drop_ci"][0] < 0.1
    assert fig["images_moved"] == 0.05 and fig["pixel_max_abs"] == 255.0
    with pytest.raises(ValueError, match="pair"):
        compare(ref, ref[:50], hits, hits)


def test_the_permission_is_the_stated_threshold():
    base = compare(_images(50, 1), _images(50, 1), np.ones(50, bool), np.ones(50, bool))
    fields = dict(n_images=50, steps=4, guidance=3.0, prompts="test", denoiser_sha256="abc")
    assert check("openvino-bf16", base, **fields).passed
    dropped = {**base, "adherence_drop": MAX_ADHERENCE_DROP + 0.01, "adherence_drop_ci": (0.0, 0.04)}
    assert not check("openvino-bf16", dropped, **fields).passed
    unsure = {**base, "adherence_drop": 0.0, "adherence_drop_ci": (-0.05, 0.06)}  # too few images to tell
    assert not check("openvino-bf16", unsure, **fields).passed
    noisy = {**base, "pixel_mean_abs": 12.0}
    c = check("openvino-bf16", noisy, **fields)
    assert not c.passed and c.reference == "openvino-fp32" and c.label == "openvino-bf16"


def test_the_fixed_prompts_are_the_evaluation_sets_first_in_distribution_prompts():
    prompts, seeds, specs = fixed_prompts(30)
    assert len(prompts) == len(set(seeds)) == len(specs) == 30
    assert (prompts, seeds) == fixed_prompts(30)[:2]


@pytest.mark.parametrize("name", ["teacher", *students()])
def test_every_default_bundle_has_a_committed_bf16_measurement_of_its_committed_graph(name):
    """kind=auto serves bf16 only on a passing measurement of that bundle's denoiser graph: the
    committed results/precision/NAME.json (scripts.precision), which `make bundles` records; a
    bundle built here records it too."""
    path = RESULTS / f"{name}.json"
    assert path.is_file(), f"run python -m scripts.precision {name}"
    (c,) = [PrecisionCheck.model_validate(v) for v in json.loads(path.read_text()).values()]
    assert c.label == "openvino-bf16" and c.n_images >= 200
    assert c.passed == c.meets_threshold() and c.machine and c.command.startswith("python -m scripts.precision")
    model = ROOT / "models" / ("teacher" if name == "teacher" else f"students/{name}")
    assert c.denoiser_sha256 == sha256_file(model / "denoiser.onnx"), "measured on another graph: measure again"
    if (BUNDLES / name / "manifest.json").is_file():
        m = load_manifest(BUNDLES / name, verify=False)
        if c.measured_graph_of(m):
            assert m.reduced_precision.get(c.label) == c


def test_measure_and_record_on_a_real_bundle(tiny_bundle, tmp_path):
    """The bundle's own pipeline in both precisions; the check lands in a manifest that still verifies."""
    from service.backends.base import BackendError

    bundle = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle)
    calls = []

    def score(images, specs):
        calls.append(images.shape)
        return np.ones(len(images), dtype=bool)

    try:
        c = measure(bundle, "openvino-bf16", score, 20, batch=8, machine_name="test")
    except BackendError as e:
        pytest.skip(f"OpenVINO bf16 cannot run on this machine: {e}")
    assert calls[0][0] == calls[1][0] == 20 and c.n_images == 20 and c.machine == "test"
    assert c.adherence_drop == 0.0 and c.pixel_mean_abs >= 0.0
    record(bundle, [c])
    m = load_manifest(bundle)  # hashes still check out
    assert m.reduced_precision["openvino-bf16"] == c and c.measured_graph_of(m)
    write_results("tiny", [c], tmp_path / "results")
    saved = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert PrecisionCheck.model_validate(saved["openvino-bf16"]) == c
    table = (tmp_path / "results" / "precision.md").read_text()
    assert "| tiny | openvino-bf16 vs openvino-fp32 | 20 |" in table
