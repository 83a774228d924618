"""The served pipeline against the offline side's evaluation path: a cross-side check, so it lives
outside `tests/service` (whose suite runs without torch or `distill`) and skips without torch."""

import numpy as np
import pytest

from service.pipeline import ImageJob

torch = pytest.importorskip("torch", reason="the evaluation path samples with the torch model")


def test_served_images_match_the_torch_sampler_on_the_default_teacher(default_bundles):
    """The ONNX Runtime pipeline against the evaluation path (torch model, torch text encoder,
    the same fewstep sampler and seeds): final images at most 2/255 apart."""
    import shapesworld as shapes
    from distill.kit.checkpoint import load_denoiser
    from distill.kit.guidance import GuidedDenoiser, encode_cond
    from distill.kit.text import TextEncoder
    from fewstep.images import to_uint8
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample
    from service.loader import load_pipeline

    pipe = load_pipeline(default_bundles / "teacher", warmup=())
    captions = [shapes.sample(9, i).caption for i in range(6)]
    jobs = [ImageJob(c, 500 + i, 8, 3.0) for i, c in enumerate(captions)]
    served = pipe.generate(jobs)
    model, cfg = load_denoiser("models/teacher")
    with torch.inference_mode():
        x = ancestral_sample(
            GuidedDenoiser(model),
            pipe.manifest.plan(8),
            encode_cond(TextEncoder(cfg.text), captions),
            3.0,
            SeededNoise([j.seed for j in jobs], (3, 32, 32)),
            torch.zeros(1),
        )
    diff = np.abs(served.astype(int) - to_uint8(x.numpy()).astype(int))
    assert diff.max() <= 2, diff.max()
