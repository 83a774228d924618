"""results/long_runs.md (distill.reports.long_runs): curves by image passes, paired comparisons."""

import json

from distill.reports.long_runs import curves, long_runs_markdown, plot_long_runs
from tests.distill.evaluation.test_per_image import make_items, make_record


def _point(out, name, images, k, seed, noise=0.0):
    rec = make_record(make_items(60), seed=seed, noise=noise)
    rec.save(out / "eval" / f"{name}-i{images}.npz")
    adh = rec.adherence()
    row = {
        "fd": 100.0 + seed, "fd_ci": [90.0, 110.0], "fd_infinity": 50.0 + seed, "kid": 0.002, "kid_ci": [0.001, 0.003],
        "adherence": adh, "adherence_ci": {}, "grain": 1.0, "grain_ci": [0.9, 1.1], "steps": k, "n_images": 60,
        "eval_seed": 1, "guidance": 3.0, "machine": "test machine",
    }  # fmt: skip
    (out / "eval" / f"{name}-i{images}.json").write_text(json.dumps(row))
    summary = {"iters": images // 64, "evals_per_image_pass": 4.8, "image_passes": images}
    (out / "eval" / f"{name}-i{images}.summary.json").write_text(json.dumps(summary))


def test_curves_and_like_for_like_comparisons(tmp_path):
    out = tmp_path / "long"
    (out / "eval").mkdir(parents=True)
    _point(out, "mm-alt-k8", 40000, 8, 1)
    _point(out, "mm-alt-k8", 80000, 8, 2)
    _point(out, "pd-k8", 80000, 8, 3, noise=8.0)
    _point(out, "cd-k4", 40000, 4, 4)
    got = curves(out)
    assert [p[0] for p in got["mm-alt-k8"]] == [40000, 80000] and list(got) == ["cd-k4", "mm-alt-k8", "pd-k8"]
    md = long_runs_markdown(out, ceiling=tmp_path / "none.json")
    assert "| mm-alt-k8 | 8 | 80000 | 1250 | 4.80 |" in md
    # mm-alt against the baseline at the same K and the same image passes, paired; none at K = 4
    assert "| mm-alt-k8 - pd-k8 (80000 images each) |" in md
    comparisons = md.split("| comparison")[1]
    assert "- cd-k4" not in comparisons  # no moment-matching run at K = 4 to set beside it
    assert "test machine" in md
    plot_long_runs(out, tmp_path / "p.png", ceiling=tmp_path / "none.json")
    assert (tmp_path / "p.png").stat().st_size > 1000
