"""Fixtures and helpers the distillation methods' tests share: a tiny random teacher, and the checks
several methods make alike (which network an update moved, that an interrupted run resumed to the
same weights, that a DDIM student samples), so each check is written once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.kit.checkpoint import load_denoiser
from tests.conftest import make_packed_model


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert_dir) -> Path:
    """A packed tiny random teacher, built once per test module (its tests only read it)."""
    return make_packed_model(tmp_path_factory.mktemp("teacher") / "t", tiny_bert_dir)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the module's weights as they are now, to compare with after an update."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two sets of weights (`snapshot`s or state dicts) are bit-identical."""
    return all(torch.equal(a[k], b[k]) for k in a)


def assert_resumed_exactly(a: Path, b: Path, packed: str = "student") -> dict[str, torch.Tensor]:
    """Run directory `b` (stopped and resumed) packed the same weights as `a` (run straight
    through) under `packed` (student/, or student-raw/ with an EMA); returns a's weights for
    further checks (that the run trained at all)."""
    weights = load_denoiser(a / packed)[0].state_dict()
    assert same(weights, load_denoiser(b / packed)[0].state_dict()), packed
    return weights


def assert_ddim_student_samples(student_dir: Path, method: str, steps: int) -> None:
    """A packed pd or cd student (both sample by DDIM through the student's x prediction): its config
    names the method, K and the ddim sampler, it takes w, and K DDIM steps at w = 3 from fixed noise
    give finite images of the tiny teacher's shape (2 x 3 x 16 x 16, random text states)."""
    from distill.kit.guidance import GuidedDenoiser
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ddim_sample

    info = json.loads((student_dir / "config.json").read_text())["student"]
    assert (info["method"], info["steps"], info["sampler"]) == (method, steps, "ddim")
    student, scfg = load_denoiser(student_dir)
    assert scfg.model.guidance_input
    cond = type("C", (), {})()
    cond.states, cond.mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        x = ddim_sample(GuidedDenoiser(student), steps, cond, 3.0, SeededNoise([1, 2], (3, 16, 16)), torch.zeros(1))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
