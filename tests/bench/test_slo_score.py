"""`fewstep bench slo`'s scoring pass: every served image rendered once (shared by servers and
loads), judged, kept and reused; the measured adherence and its paired intervals; the targets
decided on what was measured, not on the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bench.slo_score as score
from bench.slo_report import analyse
from bench.slo_score import load_scores, outcome_key, save_scores, score_served, served_keys
from bench.slo_trace import prompt_pools, prompt_spec

N = 120


class FakeRenderer:
    """Images whose first pixel is the step count: the judge below reads it back."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float, list[tuple[str, int]]]] = []

    def __call__(self, model, steps, guidance, prompts):
        self.calls.append((model, steps, guidance, list(prompts)))
        return np.full((len(prompts), 4, 4, 3), steps, np.uint8)


def judge_by_steps(good_steps: int):
    def judge(images, specs):
        assert len(images) == len(specs) and all(s.objects for s in specs)
        return images[:, 0, 0, 0] == good_steps

    return judge


def _outcome(i: int, prompts: list, model: str, latency: float = 0.2, reason: str = "as_asked") -> dict:
    p = prompts[i % len(prompts)]
    steps = 8 if model == "k8" else 4
    cls = "one_object" if len(prompt_spec(0, p.id, p.caption).objects) == 1 else "two_objects"
    return {"status": 200, "t": i * 0.1, "latency_s": latency, "prompt_class": cls, "burst": False, "model": model,
            "steps": steps, "reason": reason, "predicted_s": latency, "prompt_id": p.id, "seed": 1000 + i,
            "guidance": 3.0}  # fmt: skip


def scored_doc() -> dict:
    """Two loads over one stream of prompts and seeds: at the second, fixed-8 is late on a quarter
    of the requests, the controller serves every other one on k4 and is never late."""
    pools = prompt_pools(8, 0)
    prompts = pools["one_object"] + pools["two_objects"]
    quality = {"adherence": {"k8@8": {"one_object": 0.95, "two_objects": 0.64, "overall": 0.8},
                             "k4@4": {"one_object": 0.93, "two_objects": 0.51, "overall": 0.72}},
               "adherence_ci": {}}  # fmt: skip

    def server(make, downgrades=0):
        return {"outcomes": [make(i) for i in range(N)], "counted_downgrades": downgrades}

    calm = {n: server(lambda i: _outcome(i, prompts, "k8")) for n in ("fixed-8", "controller", "rule-x0.5")}
    calm["fixed-4"] = server(lambda i: _outcome(i, prompts, "k4"))
    busy = {
        "fixed-8": server(lambda i: _outcome(i, prompts, "k8", 2.0 if i % 4 == 0 else 0.3)),
        "fixed-4": server(lambda i: _outcome(i, prompts, "k4")),
        "controller": server(lambda i: _outcome(i, prompts, *(("k4", 0.4, "pressure") if i % 2 else ("k8",)))),
        "rule-x0.5": server(lambda i: _outcome(i, prompts, *(("k4", 0.3, "slo") if i % 3 == 0 else ("k8",)))),
    }
    busy["controller"]["counted_downgrades"] = N // 2
    busy["rule-x0.5"]["counted_downgrades"] = N // 3
    return {
        "config": {"objective_ms": 1000, "burst_s": 2.0, "seed": 0, "bundles": ["b/k8", "b/k4"]},
        "quality_rows": quality,
        "prompts": {"seed": 0, "captions": {str(p.id): p.caption for p in prompts}},  # as JSON keeps them
        "loads": [{"load": 0.3, "arrivals": N, "servers": calm}, {"load": 0.7, "arrivals": N, "servers": busy}],
    }


def test_every_served_image_is_rendered_once_whichever_servers_and_loads_served_it():
    doc = scored_doc()
    render = FakeRenderer()
    verdicts, stats = score_served(doc, render, judge_by_steps(8), batch=50, progress=False)
    keys = served_keys(doc)
    assert len(keys) == 2 * N  # each (prompt, seed) on k8 and on k4, whatever served it
    rendered = [(m, k, g, p) for m, k, g, batch in render.calls for p in batch]
    assert len(rendered) == len(set(rendered)) == 2 * N
    assert all(len(batch) <= 50 and len({(m, k, g)}) == 1 for m, k, g, batch in render.calls)
    assert set(verdicts) == set(keys) and stats["rendered"] == 2 * N and stats["reused"] == 0
    assert all(v == (k[3] == 8) for k, v in verdicts.items())
    assert stats["by_option"] == {"k4@4": N, "k8@8": N}
    # a second pass renders only what is missing
    known = {k: v for k, v in verdicts.items() if k[2] == "k8"}
    again = FakeRenderer()
    verdicts2, stats2 = score_served(doc, again, judge_by_steps(8), known=known, progress=False)
    assert verdicts2 == verdicts and stats2["reused"] == N and {c[0] for c in again.calls} == {"k4"}


def test_the_renderer_gets_the_served_prompt_seed_steps_and_guidance():
    doc = scored_doc()
    render = FakeRenderer()
    score_served(doc, render, judge_by_steps(8), progress=False)
    o = doc["loads"][1]["servers"]["controller"]["outcomes"][3]  # served on k4
    caption = doc["prompts"]["captions"][str(o["prompt_id"])]
    assert any(m == "k4" and k == 4 and g == 3.0 and (caption, o["seed"]) in batch for m, k, g, batch in render.calls)


def test_verdicts_round_trip_and_a_prompt_the_world_no_longer_samples_is_an_error(tmp_path):
    doc = scored_doc()
    verdicts, stats = score_served(doc, FakeRenderer(), judge_by_steps(8), progress=False)
    save_scores(tmp_path, {"backend": "fake"}, verdicts, stats)
    back = load_scores(tmp_path)
    assert back is not None and back["verdicts"] == verdicts and back["identity"] == {"backend": "fake"}
    assert load_scores(tmp_path / "nothing") is None
    first = next(iter(doc["prompts"]["captions"]))
    doc["prompts"]["captions"][first] = "a red circle"
    with pytest.raises(ValueError, match="shapes world changed"):
        score_served(doc, FakeRenderer(), judge_by_steps(8), progress=False)
    doc.pop("prompts")
    with pytest.raises(ValueError, match="recorded no prompts"):
        score_served(doc, FakeRenderer(), judge_by_steps(8), progress=False)


def test_nothing_served_has_no_key():
    assert outcome_key({"status": 429, "model": None, "prompt_id": 3, "seed": 1, "steps": None}) is None
    assert outcome_key({"status": 200, "model": "k8", "steps": 8, "prompt_class": "one_object"}) is None  # old run
    assert outcome_key(_outcome(0, prompt_pools(2, 0)["one_object"], "k8")) is not None


def _scores(doc, good_steps):
    verdicts, stats = score_served(doc, FakeRenderer(), judge_by_steps(good_steps), progress=False)
    return {"identity": {"backend": "fake"}, "stats": stats, "verdicts": verdicts}


def test_measured_adherence_paired_intervals_and_targets_on_what_was_measured():
    doc = scored_doc()
    a = analyse(doc, _scores(doc, good_steps=8))  # the evaluator passes every 8-step image, no 4-step one
    assert a["basis"] == "measured"
    busy = a["loads"][1]["servers"]
    assert busy["fixed-8"]["measured"] == 1.0 and busy["fixed-4"]["measured"] == 0.0
    assert busy["controller"]["measured"] == pytest.approx(0.5) and busy["controller"]["scored"] == N
    lo, hi = busy["controller"]["measured_ci"]
    assert lo <= 0.5 <= hi  # every block holds as many requests of each (alternate requests)
    vs4 = a["loads"][1]["controller_vs"]["fixed-4"]
    assert vs4["measured_diff"] == pytest.approx(0.5) and vs4["measured_diff_ci"][0] > 0
    assert vs4["adherence_diff"] != pytest.approx(vs4["measured_diff"])  # the rows' prediction stays beside it
    t = a["targets"]
    assert t["basis"] == "measured" and t["burst_load"]["holds"]
    rule = {r["load"]: r for r in t["vs_static_rule"]["rows"]}[0.7]
    assert rule["rules"] == {"rule-x0.5": 1.0}  # both at 0% over
    assert rule["adherence_diff"] == pytest.approx(0.5 - 2 / 3) and not rule["holds"]
    assert "predicted_diff" in rule
    by = a["scoring"]["by_option"]
    assert by["k8@8"]["two_objects"]["measured"] == 1.0 and by["k8@8"]["two_objects"]["row"] == 0.64


def test_a_target_the_rows_predict_met_is_missed_when_the_images_say_otherwise():
    doc = scored_doc()
    predicted = analyse(doc)
    assert predicted["basis"] == "predicted" and predicted["targets"]["burst_load"]["holds"]
    measured = analyse(doc, _scores(doc, good_steps=4))  # here the 4-step images are the good ones
    row = measured["targets"]["burst_load"]["rows"][0]
    assert row["adherence_vs_fixed4"] == pytest.approx(-0.5) and not measured["targets"]["burst_load"]["holds"]
    assert row["predicted_vs_fixed4"] > 0


def test_an_unfinished_scoring_pass_is_an_error():
    doc = scored_doc()
    scores = _scores(doc, 8)
    scores["verdicts"].pop(next(iter(scores["verdicts"])))
    with pytest.raises(ValueError, match="--score-only"):
        analyse(doc, scores)


def test_score_config_rejects_an_empty_batch_or_share():
    with pytest.raises(ValueError, match="--score-batch"):
        score.ScoreConfig(batch=0)
    with pytest.raises(ValueError, match="--score-share"):
        score.ScoreConfig(share=0.0)


def test_a_share_scores_the_same_requests_at_every_server_and_load():
    picked = [score.selected(p, s, 0.25) for p in range(40) for s in range(100)]
    assert sum(picked) / len(picked) == pytest.approx(0.25, abs=0.03)
    assert picked == [score.selected(p, s, 0.25) for p in range(40) for s in range(100)]  # stable
    doc = scored_doc()
    verdicts, stats = score_served(doc, FakeRenderer(), judge_by_steps(8), share=0.3, progress=False)
    assert 0 < len(verdicts) < 2 * N and stats["share"] == 0.3
    assert all(score.selected(k[0], k[1], 0.3) for k in verdicts)
    a = analyse(doc, {"identity": {}, "stats": stats, "verdicts": verdicts})
    busy = a["loads"][1]["servers"]
    chosen = sum(
        score.selected(o["prompt_id"], o["seed"], 0.3) for o in doc["loads"][1]["servers"]["fixed-8"]["outcomes"]
    )
    assert busy["fixed-8"]["scored"] == busy["controller"]["scored"] == chosen < N
    assert busy["fixed-8"]["measured"] == 1.0 and busy["fixed-4"]["measured"] == 0.0
    verdicts.pop(next(iter(verdicts)))
    with pytest.raises(ValueError, match="--score-only"):
        analyse(doc, {"identity": {}, "stats": stats, "verdicts": verdicts})


def test_score_only_over_a_saved_run(tmp_path, run_bench, monkeypatch):
    """`fewstep bench slo --no-score`, then `--score-only`: the report measures what was served."""
    from tests.bench.test_slo import family_bundles

    bundles = family_bundles(tmp_path)
    out = tmp_path / "out"
    argv = ["slo", "--bundles", *bundles, "--curve", "0,0.5", "--objective-ms", "60", "--loads", "0.4",
            "--seconds", "2", "--burst-s", "0.5", "--thresholds", "0.5", "--out", str(out), "--no-score"]  # fmt: skip
    assert run_bench(argv) == 0
    assert not (out / score.SCORES).exists() and "scoring pass was not run" in (out / "slo.md").read_text()

    class Judge:
        def __init__(self, path):
            self.manifest = {"accuracy": {"scene": 1.0}}

        def __call__(self, images, specs):
            return judge_by_steps(8)(images, specs)

    monkeypatch.setattr(score, "BundleRenderer", lambda bundles, cfg: FakeRenderer())
    monkeypatch.setattr(score, "EvaluatorJudge", Judge)
    monkeypatch.setattr(score, "identity", lambda doc, cfg: {"backend": cfg.backend})
    assert run_bench(["slo", "--score-only", "--out", str(out)]) == 0
    text = (out / "slo.md").read_text()
    assert "Served adherence measured" in text and "On the measured served adherence" in text
    scores = load_scores(out)
    assert scores is not None and scores["stats"]["rendered"] > 0
    assert run_bench(["slo", "--score-only", "--out", str(out)]) == 0  # all reused
    assert load_scores(out)["stats"]["rendered"] == 0
    # a fresh run without the pass leaves the verdicts as a cache but reports what it can: the prediction
    assert run_bench(argv) == 0
    assert "scoring pass was not run" in (out / "slo.md").read_text() and (out / score.SCORES).exists()


def test_a_bundle_is_identified_by_what_makes_its_images(tmp_path):
    """A record added to a manifest (a precision check's) keeps the verdicts; a new graph does not."""
    import json

    from tests.bench.test_slo import family_bundles

    k8, _ = family_bundles(tmp_path)
    path = Path(k8) / "manifest.json"
    before = score.bundle_identity(k8)
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "reduced_precision": {"openvino-bf16": {"passed": True}}}))
    assert score.bundle_identity(k8) == before
    manifest["files"] = {**manifest["files"], "denoiser.onnx": "0" * 64}
    path.write_text(json.dumps(manifest))
    assert score.bundle_identity(k8) != before


@pytest.mark.slow
def test_the_real_bundles_render_the_same_image_alone_or_in_a_batch_and_the_evaluator_judges_it():
    """What the cache relies on: an image is its (prompt, seed, model, steps, guidance)."""
    root = Path(__file__).resolve().parents[2]
    bundle, evaluator = root / "bundles" / "pd-k4", root / "models" / "evaluator"
    if not (bundle / "manifest.json").is_file() or not (evaluator / "manifest.json").is_file():
        pytest.skip("needs the exported bundle bundles/pd-k4 and the evaluator models/evaluator (make bundles)")
    render = score.BundleRenderer([str(bundle)], score.ScoreConfig(threads=1))
    judge = score.EvaluatorJudge(evaluator)
    pools = prompt_pools(4, 0)
    prompts = [(p.caption, 7 + i) for i, p in enumerate(pools["one_object"])]
    batch = render("pd-k4", 4, 3.0, prompts)
    alone = render("pd-k4", 4, 3.0, prompts[2:3])
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(alone[0], batch[2])
    ok = judge(batch, [prompt_spec(0, p.id, p.caption) for p in pools["one_object"]])
    assert ok.dtype == bool and ok.shape == (4,)
