"""PSO preference tuning: the loss's fixed values and direction, pairing by the judge, prompts kept
apart from the evaluation's, and a short run on a tiny student with a fake judge (that prefers
brighter images), the loss through the real student raising the preferred samples' likelihood
margin, and a short run that packs a student that loads like the source."""

import json

import numpy as np
import pytest
import torch

import shapesworld as shapes
from distill.evaluation.eval_set import EVAL_SEED
from distill.kit.checkpoint import load_denoiser, student_info
from distill.kit.config import ConfigError
from distill.kit.guidance import encode_cond
from distill.tune.config import load_pso_config
from distill.tune.pso import PsoTuner, adherence_score, denoising_error, preferences, pso_loss, tune
from tests.conftest import make_packed_model


def test_pso_loss_fixed_values():
    z = torch.zeros(2)
    loss, margin = pso_loss(z, z, z, z, beta=10.0)
    assert float(loss) == pytest.approx(np.log(2)) and torch.all(margin == 0)
    # the student denoises the winner 0.01 better and the loser 0.01 worse than the reference
    loss, margin = pso_loss(torch.tensor([0.09]), torch.tensor([0.11]), torch.tensor([0.1]), torch.tensor([0.1]), 100.0)
    assert float(margin) == pytest.approx(-0.02) and float(loss) == pytest.approx(np.log1p(np.exp(-2.0)), rel=1e-5)


def test_pso_loss_gradient_lowers_the_winners_error_and_raises_the_losers():
    err_w, err_l = torch.tensor([0.1], requires_grad=True), torch.tensor([0.1], requires_grad=True)
    loss, _ = pso_loss(err_w, err_l, torch.tensor([0.1]), torch.tensor([0.1]), 50.0)
    loss.backward()
    assert float(err_w.grad) > 0 and float(err_l.grad) < 0  # descent: err_w down, err_l up


def test_preferences_drop_ties():
    keep, a_wins = preferences(np.array([1.0, 0.5, 1.2]), np.array([0.5, 0.5, 1.5]))
    assert keep.tolist() == [True, False, True] and a_wins[keep].tolist() == [True, False]


def test_adherence_score_orders_full_partial_and_wrong():
    spec = shapes.parse_prompt("a large red circle")
    right = shapes.Scene("white", (shapes.ShapeObject("red", "circle", "large", 4),))
    near = shapes.Scene("white", (shapes.ShapeObject("red", "circle", "small", 4),))
    wrong = shapes.Scene("white", (shapes.ShapeObject("blue", "square", "small", 4),))
    s = adherence_score([right, near, wrong], [spec] * 3)
    assert s[0] >= 1.0 > s[1] > s[2]


@pytest.fixture(scope="module")
def student(tmp_path_factory, tiny_bert_dir):
    path = make_packed_model(tmp_path_factory.mktemp("student") / "s", tiny_bert_dir, guidance_input=True)
    info = json.loads((path / "config.json").read_text())
    info["student"] = {"method": "mm-alt", "steps": 2, "sampler": "ancestral", "guidance": [1.0, 3.0, 5.0]}
    (path / "config.json").write_text(json.dumps(info))
    return path


def brightness_judge(images, specs):
    """A fake judge: brighter is better (a preference a tiny random student can learn in a few updates)."""
    assert len(images) == len(specs)
    return images.astype(np.float64).mean(axis=(1, 2, 3))


def test_tuning_prompts_are_never_the_evaluations(student):
    cfg = load_pso_config("tiny")
    assert cfg.prompt_seed != EVAL_SEED
    tuner = PsoTuner(cfg, student, brightness_judge)
    captions, specs = tuner.prompts(0)
    assert len(captions) == cfg.prompts_per_update and len(specs) == len(captions)
    assert captions != tuner.prompts(1)[0]


def test_the_loss_through_the_student_raises_the_preferred_samples_margin(student):
    """A few Adam steps of the PSO loss on fixed pairs of the student's own samples (first half
    preferred) make the student denoise the preferred ones better than its reference does."""
    tuner = PsoTuner(load_pso_config("tiny", None, ["lr=1e-3"]), student, brightness_judge)
    captions, _ = tuner.prompts(0)
    cond = encode_cond(tuner.encoder, captions + captions)
    n = len(captions)
    x = tuner.sample(tuner.policy, cond, list(range(2 * n)))
    t = tuner.grid[torch.arange(n) % len(tuner.grid)].repeat(2)
    eps = torch.randn((n, *x.shape[1:]), generator=torch.Generator().manual_seed(0)).repeat(2, 1, 1, 1)
    w = torch.full((2 * n,), tuner.w)
    margins = []
    for _ in range(5):
        err = denoising_error(tuner.policy, x, t, eps, cond, w)
        with torch.no_grad():
            ref = denoising_error(tuner.reference, x, t, eps, cond, w)
        loss, margin = pso_loss(err[:n], err[n:], ref[:n], ref[n:], beta=200.0)
        margins.append(float(margin.mean()))
        tuner.opt.zero_grad()
        loss.backward()
        tuner.opt.step()
    assert margins[0] == pytest.approx(0.0, abs=1e-9) and margins[-1] < 0, margins


def test_a_short_run_packs_a_tuned_student_that_loads_like_the_source(student, tmp_path):
    cfg = load_pso_config("tiny", None, ["iters=2", "prompts_per_update=4", "lr=1e-3", "log_every=1"])
    summary = tune(cfg, student, tmp_path / "run", brightness_judge, progress=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["margin"] == pytest.approx(0.0, abs=1e-9)  # the student starts as its reference
    tuned, _ = load_denoiser(tmp_path / "run" / "student")
    source, _ = load_denoiser(student)
    moved = [not torch.equal(v, source.state_dict()[k]) for k, v in tuned.state_dict().items()]
    assert any(moved)
    assert summary["pairs"] > 0 and summary["network_backward_images"] == 2 * summary["pairs"]
    info = student_info(tmp_path / "run" / "student")
    assert (info["steps"], info["sampler"], info["method"]) == (2, "ancestral", "mm-alt")
    assert info["tuning"]["method"] == "pso" and info["tuning"]["iters"] == 2
    for name in ("samples_before.png", "loss.png", "student/samples.png"):
        assert (tmp_path / "run" / name).is_file()
    with pytest.raises(ConfigError, match="already holds"):
        tune(cfg, student, tmp_path / "run", brightness_judge, progress=False)


def test_a_teacher_is_refused(tmp_path, tiny_bert_dir):
    teacher = make_packed_model(tmp_path / "t", tiny_bert_dir)
    with pytest.raises(ConfigError, match="not a packed student"):
        PsoTuner(load_pso_config("tiny"), teacher, brightness_judge)
