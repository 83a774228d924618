"""The evaluation pipeline against sets whose right answer is known, with the committed evaluator."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

import shapesworld as shapes
from distill.evaluation.evaluate import adherence, eval_set, measure, score
from distill.evaluation.per_image import PerImage
from tests.distill.conftest import EVALUATOR, N

ROOT = Path(__file__).resolve().parents[3]


def _rerendered(items, seed):
    rng = np.random.default_rng(seed)
    return np.stack([shapes.render(e.item.scene, shapes.replace(e.item.scene, rng), 32) for e in items])


def test_rendered_images_score_near_perfect(evaluator, items, reference):
    other = _rerendered(items, 1)
    s = score(evaluator, other, reference, items, resamples=0)
    assert s["adherence"]["overall"] >= 0.97 and s["adherence"]["held_out"] >= 0.95
    assert s["precision"] > 0.8 and s["recall"] > 0.8
    s_blur = score(evaluator, _blurred(other), reference, items, resamples=0)
    assert s_blur["fd"] > 5 * max(s["fd"], 1e-3), (s["fd"], s_blur["fd"])
    assert abs(s["kid"]) < 0.05, s["kid"]  # unbiased: near zero for the same distribution
    assert s["free_attribute_tv"]["background"] < 0.05


def _blurred(images):
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.2))) for im in images])


def test_colour_swapped_images_score_low_adherence(evaluator, items, reference):
    swap = dict(zip(shapes.COLOURS, list(shapes.COLOURS)[1:] + list(shapes.COLOURS)[:1], strict=True))
    rng = np.random.default_rng(2)
    swapped = []
    for e in items:
        scene = shapes.Scene(
            e.item.scene.background,
            tuple(shapes.ShapeObject(swap[o.colour], o.shape, o.size, o.cell) for o in e.item.scene.objects),
        )
        swapped.append(shapes.render(scene, shapes.replace(scene, rng), 32))
    s = score(evaluator, np.stack(swapped), reference, items, resamples=0)
    assert s["adherence"]["overall"] < 0.05
    assert s["adherence"]["per_attribute"]["colour"] < 0.05
    assert s["adherence"]["per_attribute"]["shape"] > 0.95  # only colours were changed


def test_collapsed_background_shows_in_free_attribute_tv(evaluator, items, reference):
    rng = np.random.default_rng(3)
    black = []
    for e in items:
        bg = e.item.scene.background if e.spec.background else "black"
        scene = shapes.Scene(bg, e.item.scene.objects)
        black.append(shapes.render(scene, shapes.replace(scene, rng), 32))
    s = score(evaluator, np.stack(black), reference, items, resamples=0)
    assert s["free_attribute_tv"]["background"] > 0.5
    assert s["adherence"]["overall"] > 0.95  # the prompts never asked for a background


def test_two_object_failures_are_broken_down_by_attribute():
    """Scenes that lose their second object fail two-object prompts on count only; swapping the two
    objects' colours fails them on colour binding; one-object prompts are untouched by either."""
    items = [e for e in eval_set(200) if not e.held_out]
    truth = [e.item.scene for e in items]
    dropped = [shapes.Scene(sc.background, sc.objects[:1]) for sc in truth]
    a = adherence(dropped, items)
    assert a["one_object"] == 1.0 and a["two_objects"] == 0.0
    assert a["two_objects_per_attribute"]["count"] == 0.0 and a["two_objects_per_attribute"]["background"] == 1.0

    def swap(sc):
        if len(sc.objects) < 2 or sc.objects[0].colour == sc.objects[1].colour:
            return sc
        o1, o2 = sc.objects
        return shapes.Scene(sc.background, (replace(o1, colour=o2.colour), replace(o2, colour=o1.colour)))

    b = adherence([swap(sc) for sc in truth], items)
    assert b["one_object"] == 1.0 and b["two_objects_per_attribute"]["count"] == 1.0
    # Only pairs that share a shape still satisfy their prompt once their colours are swapped.
    assert b["two_objects_per_attribute"]["colour"] < 0.3 and b["two_objects_per_attribute"]["shape"] == 1.0


SCHEMA = {
    "model", "sampler", "steps", "guidance", "nfe", "n_images", "fd", "kid", "precision", "recall", "adherence",
    "seconds_per_image", "machine", "git_sha",
}  # fmt: skip


@pytest.mark.parametrize("sampler", ["ancestral", "dpmpp-2m"])
def test_fewstep_eval_writes_a_results_row(tmp_path, sampler):
    from distill.evaluation.evaluate import evaluate
    from distill.kit.config import load_config
    from distill.teacher.train import train

    cfg = load_config(
        "tiny",
        overrides=["steps=2", "model.resolution=32", "data.resolution=32", "model.cross_attn_resolutions=[16]"],
    )
    train(cfg, tmp_path / "run", progress=False)
    row = evaluate(tmp_path / "run", sampler, 2, 2.0, n_images=10, name="row", out_dir=tmp_path / "results",
                   evaluator_path=EVALUATOR, progress=False, resamples=20)  # fmt: skip
    saved = json.loads((tmp_path / "results" / "row.json").read_text())
    assert SCHEMA <= set(saved) and saved["n_images"] == 10 and saved["steps"] == 2
    assert saved["nfe"] == 4  # 2 steps, guidance doubles the batch
    assert set(saved["adherence"]) >= {"overall", "one_object", "two_objects", "held_out", "per_attribute"}
    assert (tmp_path / "results" / "row.png").is_file()
    assert row["fd"] > 0
    # Intervals beside the figures, the training cost of the scored run, and the per-image sidecar.
    assert saved["fd_ci"][0] < saved["fd_ci"][1] and len(saved["kid_ci"]) == 2
    assert set(saved["adherence_ci"]) == set(saved["adherence"])
    assert saved["grain_reference"] is not None and saved["bootstrap"]["resamples"] == 20
    assert saved["training"]["updates"] == 2 and saved["training"]["image_passes"] == 2 * cfg.batch_size
    rec = PerImage.load(tmp_path / "results" / saved["per_image"])
    assert rec.n == 10 and rec.meta["guidance"] == 2.0 and rec.adherence() == saved["adherence"]


def test_rows_carry_bootstrap_intervals_that_bracket_their_figures(evaluator, items, reference):
    rng = np.random.default_rng(5)
    noisy = np.clip(_rerendered(items, 4) + rng.normal(0, 5, reference.shape), 0, 255).astype(np.uint8)
    s, rec = measure(evaluator, noisy, reference, items, resamples=40)
    assert s["fd_ci"][0] < s["fd"] < s["fd_ci"][1]
    assert s["kid_ci"][0] < s["kid"] < s["kid_ci"][1]
    for key in ("overall", "one_object", "two_objects", "held_out"):
        lo, hi = s["adherence_ci"][key]
        assert lo <= s["adherence"][key] <= hi and hi - lo < 0.3, key
    # Grain: noise of sd 5 levels on the background reads about 5; the renders' floor is about 0.
    assert 3.5 < s["grain"] < 6.5 and s["grain_reference"] < 0.2
    assert s["grain_ci"][0] <= s["grain"] <= s["grain_ci"][1]
    assert rec.n == N and rec.adherence() == s["adherence"]


def _fake_evaluate(calls):
    """Stands in for sampling: writes a row and a sidecar as `evaluate` does, with a fixed identity."""
    from tests.distill.evaluation.test_per_image import make_items, make_record

    items = make_items(30)

    def fake(model, sampler, steps, guidance, n_images, name=None, out_dir=None, **kw):
        calls.append((sampler, steps, guidance, n_images))
        make_record(items, seed=len(calls)).save(Path(out_dir) / f"{name}.npz")
        from distill.evaluation import evaluate as ev

        row = {"name": name, "model": str(model), "sampler": sampler, "steps": steps, "guidance": guidance,
               "n_images": n_images, "eval_seed": ev.EVAL_SEED, "eval_set_version": ev.EVAL_SET_VERSION,
               "model_sha256": "m", "evaluator_sha256": "e", "per_image": f"{name}.npz",
               "fd": float(len(calls))}  # fmt: skip
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.json").write_text(json.dumps(row))
        return row

    return fake


def test_teacher_ceiling_is_computed_once_per_w_and_reused_by_hash(tmp_path, monkeypatch):
    import distill.evaluation.evaluate as ev

    calls = []
    monkeypatch.setattr(ev, "evaluate", _fake_evaluate(calls))
    monkeypatch.setattr(ev, "identity", lambda *a: {"model_sha256": "m", "evaluator_sha256": "e"})
    out = tmp_path / "ceiling"
    w3 = ev.teacher_ceiling("models/teacher", 3.0, 2000, out, progress=False)
    w1 = ev.teacher_ceiling("models/teacher", 1.0, 2000, out, progress=False)
    assert w3["name"] == "teacher-ancestral-64-w3-n2000" and w1["name"] == "teacher-ancestral-64-w1-n2000"
    assert calls == [("ancestral", 64, 3.0, 2000), ("ancestral", 64, 1.0, 2000)]
    again = ev.teacher_ceiling("models/teacher", 3.0, 2000, out, progress=False)
    assert len(calls) == 2 and again["fd"] == w3["fd"]  # the 2,000-image row is reused
    ev.teacher_ceiling("models/teacher", 3.0, 500, out, progress=False)
    assert len(calls) == 3 and (out / "teacher-ancestral-64-w3-n500.json").is_file()
    # Other weights, or a row without its sidecar, are measured again.
    monkeypatch.setattr(ev, "identity", lambda *a: {"model_sha256": "other", "evaluator_sha256": "e"})
    ev.teacher_ceiling("models/teacher", 3.0, 2000, out, progress=False)
    assert len(calls) == 4
    (out / "teacher-ancestral-64-w1-n2000.npz").unlink()
    ev.teacher_ceiling("models/teacher", 1.0, 2000, out, progress=False)
    assert len(calls) == 5
    ev.teacher_ceiling("models/teacher", 1.0, 2000, out, progress=False, reuse=False)
    assert len(calls) == 6


def test_training_record_reads_students_packed_teachers_and_runs(tmp_path):
    from distill.evaluation.evaluate import training_record

    student = tmp_path / "student"
    student.mkdir()
    training = {"iters": 600, "wall_s": 1867.0, "network_forward_images": 67200, "network_backward_images": 19200,
                "device": "cpu"}  # fmt: skip
    (student / "config.json").write_text(json.dumps({"student": {"steps": 4, "training": training}}))
    assert training_record(student) == {
        "updates": 600, "image_passes": 67200, "backward_image_passes": 19200, "wall_s": 1867.0, "device": "cpu",
    }  # fmt: skip
    teacher = ROOT / "models" / "teacher"
    rec = training_record(teacher)
    cfg = json.loads((teacher / "config.json").read_text())
    steps, batch = cfg["training"]["steps"], cfg["config"]["batch_size"]
    assert rec["updates"] == steps and rec["image_passes"] == steps * batch and rec["wall_s"] > 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"method": "pd", "steps": 4}))  # a run's own config
    (run / "summary.json").write_text(json.dumps({"iters": 5, "wall_s": 2.0, "network_forward_images": 10}))
    assert training_record(run)["updates"] == 5
    assert training_record(tmp_path / "empty") is None
