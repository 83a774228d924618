"""The shapes-world distillation runner on a tiny random teacher: isolation of updates, a short
end-to-end run per method that writes a student that samples and exports, and resume."""

import json

import numpy as np
import pytest
import torch

from distill.checkpoint import load_denoiser
from distill.data import build_dataset
from distill.distill_config import load_distill_config
from distill.distiller import Distiller, distill
from tests.conftest import make_packed_model


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_bert_dir):
    return make_packed_model(tmp_path_factory.mktemp("teacher") / "t", tiny_bert_dir)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_each_update_moves_only_its_own_network(teacher):
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16"])
    run = Distiller(cfg, teacher, torch.device("cpu"))
    batches = iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 4))
    student, aux, t0 = _snapshot(run.student), _snapshot(run.aux), _snapshot(run.teacher)
    run.aux_update(next(batches), cfg.lr)
    assert _same(student, _snapshot(run.student)) and _same(t0, _snapshot(run.teacher))
    assert not _same(aux, _snapshot(run.aux))
    aux = _snapshot(run.aux)
    run.student_update(next(batches), cfg.lr)
    assert _same(aux, _snapshot(run.aux)) and _same(t0, _snapshot(run.teacher))
    assert not _same(student, _snapshot(run.student))


def test_students_start_equal_to_the_teacher(teacher):
    run = Distiller(load_distill_config("tiny"), teacher, torch.device("cpu"))
    z, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    states, mask = torch.randn(3, 16, 32), torch.ones(3, 16, dtype=torch.bool)
    with torch.no_grad():
        ref = run.teacher(z, t, states, mask)
        for w in (1.0, 4.0):
            torch.testing.assert_close(run.student(z, t, states, mask, torch.full((3,), w)), ref)


@pytest.mark.parametrize("method", ["mm-alt", "mm-param"])
def test_a_short_distillation_writes_a_student_that_samples_and_exports(method, teacher, tmp_path):
    from distill.export import export_bundle
    from fewstep.bundle import load_manifest
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    cfg = load_distill_config("tiny", None, [f"method={method}", "steps=2"])
    summary = distill(cfg, teacher, tmp_path / "run", progress=False)
    assert summary["finished"] and summary["iters"] == 4 and summary["network_forward_images"] > 0
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["student_loss"]) for r in rows)
    student, scfg = load_denoiser(tmp_path / "run" / "student")
    assert scfg.model.guidance_input
    with torch.no_grad():
        from distill.denoise import GuidedDenoiser

        cond = type("C", (), {})()
        cond.states, cond.mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
        x = ancestral_sample(GuidedDenoiser(student), 2, cond, 3.0, SeededNoise([1, 2], (3, 16, 16)), torch.zeros(1))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    m = export_bundle(tmp_path / "run" / "student", tmp_path / "bundle", cache_dir=tmp_path / "cache")
    assert sorted(m.steps) == [2] and m.guidance.network_input
    assert (m.guidance.min, m.guidance.default, m.guidance.max) == (1.0, 3.0, 5.0)
    assert load_manifest(tmp_path / "bundle").name == "bundle"


def test_an_interrupted_distillation_resumes_exactly(teacher, tmp_path):
    cfg = load_distill_config("tiny", None, ["iters=4", "ckpt_every=2"])
    distill(cfg, teacher, tmp_path / "a", progress=False)
    distill(cfg, teacher, tmp_path / "b", progress=False, stop_at=2)
    assert not (tmp_path / "b" / "student").exists()
    distill(cfg, teacher, tmp_path / "b", progress=False)
    a = load_denoiser(tmp_path / "a" / "student")[0].state_dict()
    b = load_denoiser(tmp_path / "b" / "student")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_errors_name_the_key(teacher, tmp_path):
    from distill.config import ConfigError

    with pytest.raises(ConfigError, match="guidance_min"):
        load_distill_config("tiny", None, ["guidance_min=4", "guidance_default=3"])
    with pytest.raises(ConfigError, match="steps"):
        load_distill_config("tiny", None, ["steps=0"])
    cfg = load_distill_config("tiny")
    distill(cfg, teacher, tmp_path / "r", progress=False, stop_at=2)
    with pytest.raises(ConfigError, match="lr"):
        distill(cfg.model_copy(update={"lr": 1.0}), teacher, tmp_path / "r", progress=False)
