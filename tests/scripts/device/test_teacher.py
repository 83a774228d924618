"""The GPU-trained default teacher samples on the CPU as it did on the GPU (issue 15's parity test).

`scripts/device/teacher.py finish` drew fixed prompts and seeds with the chosen teacher in fp32
(TF32 off) on the GPU and saved the images beside this file; the CPU must draw the same images
from the committed weights, up to rounding: at most 1/255 on any pixel value, and on few of them.
"""

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from distill.kit.checkpoint import load_denoiser  # noqa: E402
from distill.kit.data import to_uint8  # noqa: E402
from distill.kit.guidance import GuidedDenoiser, encode_cond  # noqa: E402
from distill.kit.text import TextEncoder  # noqa: E402
from fewstep.bundle import sha256_file  # noqa: E402
from fewstep.rng import SeededNoise  # noqa: E402
from fewstep.sampler import ancestral_sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TEACHER = ROOT / "models" / "teacher"
REFERENCE = Path(__file__).with_name("teacher_gpu_parity.npz")


def _trained_on_gpu() -> bool:
    info = json.loads((TEACHER / "config.json").read_text())
    return "cpu" not in str(info.get("trained_on", "cpu")).lower()


def test_gpu_trained_teacher_samples_the_same_images_on_the_cpu():
    if not _trained_on_gpu():
        pytest.skip("the committed teacher was trained on a CPU: no GPU reference applies")
    ref = np.load(REFERENCE)
    # A GPU-trained teacher must come with its own reference: another teacher's is an error.
    assert str(ref["model_sha256"]) == sha256_file(TEACHER / "model.safetensors"), (
        "tests/scripts/device/teacher_gpu_parity.npz belongs to other weights: "
        "copy the parity.npz that scripts/device/teacher.sh brought back with this teacher"
    )
    model, cfg = load_denoiser(TEACHER)
    enc = TextEncoder(cfg.text, "cpu")
    captions = [str(c) for c in ref["captions"]]
    noise = SeededNoise(
        [int(s) for s in ref["seeds"]], (cfg.model.in_channels, cfg.model.resolution, cfg.model.resolution)
    )
    with torch.inference_mode():
        x = ancestral_sample(
            GuidedDenoiser(model), int(ref["steps"]), encode_cond(enc, captions), float(ref["guidance"]), noise,
            torch.zeros(1),
        )  # fmt: skip
    diff = np.abs(to_uint8(x).astype(int) - ref["images"].astype(int))
    assert diff.max() <= 1, f"max |CPU - GPU| = {diff.max()}/255"
    assert (diff > 0).mean() < 0.02, f"{(diff > 0).mean():.1%} of pixel values differ"
