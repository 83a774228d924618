"""Step-level batching on the real ONNX Runtime CPU backend against request-level sampling.

Byte identity between the modes holds exactly as far as the backend's rows do not depend on their
neighbours. ORT CPU is not strictly batch-invariant (measured: the raw denoiser output of a row
moves by about 1e-6 between batch 1 and batch 8, at every graph optimisation level, on both
default bundles). Most final uint8 images still coincide, but some values can move by 1/255 (seen
with an earlier default student and with the GPU-trained teacher, for one image of five), and they
do so in request-level mode too (the same image alone or in a batch of 2). So: step-level stays
within the 1/255 that request-level batching itself shows, on under 1% of the pixel values.
"""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.step_scheduler import StepBatch
from service.pipeline import ImageJob
from tests.defaults import student

K4 = student(4)  # the default 4-step student


@pytest.mark.parametrize("model", ["teacher", K4])
def test_default_bundles_step_level_mix_matches_request_level_to_rounding(default_bundles, model):
    from service.loader import load_pipeline

    if not (default_bundles / model / "manifest.json").is_file():
        pytest.skip(f"no {model} bundle")
    p = load_pipeline(default_bundles / model, warmup=())
    ks = sorted(p.manifest.steps)[:2]
    neg = None if p.manifest.guidance.network_input else "a blue square"
    jobs = [
        ImageJob("a red circle on a green background", 1, ks[0], 3.0),
        ImageJob("two yellow triangles", 2, ks[-1], 1.0),
        ImageJob("a small purple star", 3, ks[0], 4.5, neg),
        ImageJob("a red circle on a green background", 4, ks[-1], 2.0),
        ImageJob("a big blue square", 5, ks[0], 1.0),
    ]
    alone = [p.generate([j])[0] for j in jobs]
    batch = StepBatch(p)
    arrivals = {0: [0, 1], 2: [2], 3: [3, 4]}
    got: dict[int, np.ndarray] = {}
    k = 0
    while len(batch) or k <= max(arrivals):
        for n in arrivals.get(k, []):
            batch.admit(n, [jobs[n]])
        for im in batch.iterate().finished:
            got[im.owner] = im.image
        k += 1
    together = p.generate([j for j in jobs if j.steps == ks[0]])  # request level, one batch
    alone_first = np.stack([a for a, j in zip(alone, jobs, strict=True) if j.steps == ks[0]])
    assert np.abs(alone_first.astype(int) - together).max() <= 1
    diff = np.stack([np.abs(alone[n].astype(int) - got[n]) for n in range(len(jobs))])
    assert diff.max() <= 1, f"step-level moved a pixel value by {diff.max()}/255"
    assert (diff > 0).mean() < 0.01, f"{(diff > 0).mean():.2%} of pixel values moved"
