"""The methods report on tiny fake run directories: rows by method and K with both judges, paired
differences against the ceiling and mm-alt, the winner per K by the project's rule, the plot."""

import json
from dataclasses import replace

import numpy as np
import pytest

import shapesworld as shapes
from distill.evaluation.eval_set import EVAL_SEED, eval_set
from distill.evaluation.evaluate import reference_images
from distill.evaluation.metrics import frechet_distance
from distill.evaluation.per_image import PerImage, check_matrix
from distill.reports.methods import load_rows, main, methods_markdown

N = 120


@pytest.fixture(scope="module")
def world():
    items = eval_set(N)
    return items, reference_images(items, 32)


def _write_row(eval_dir, name, k, quality, world, analytic_quality=None, seed=0):
    """A row whose share `quality` of images show their prompt's scene (the rest: nothing), with
    features that drift from the reference as quality drops, and its sidecars and summary."""
    items, ref = world
    rng = np.random.default_rng(seed)
    truth = [e.item.scene for e in items]
    good = rng.random(N) < quality
    pred = [t if g else shapes.Scene(t.background, ()) for t, g in zip(truth, good, strict=True)]
    ref_feats = np.random.default_rng(99).normal(size=(N, 8)).astype(np.float32)
    feats = ref_feats + rng.normal(scale=2 * (1 - quality), size=ref_feats.shape).astype(np.float32)
    rec = PerImage.build(items, pred, truth, feats, ref_feats, ref, ref)
    row = {
        "name": name, "model": str(eval_dir / name), "sampler": "ancestral", "steps": k, "guidance": 3.0,
        "n_images": N, "eval_seed": EVAL_SEED, "nfe": k, "seconds_per_image": 0.002 * k,
        "fd": frechet_distance(ref_feats, feats), "kid": 0.01 * (1 - quality), "kid_ci": [0.0, 0.02],
        "adherence": rec.adherence(), **rec.intervals(50), "machine": "test machine", "model_sha256": name,
    }  # fmt: skip
    rec.save(eval_dir / f"{name}.npz")
    if analytic_quality is not None:
        good2 = np.random.default_rng(seed + 1).random(N) < analytic_quality
        pred2 = [t if g else shapes.Scene(t.background, ()) for t, g in zip(truth, good2, strict=True)]
        own = replace(rec, checks=check_matrix(pred2, items))
        own.save(eval_dir / f"{name}.analytic.npz")
        row["adherence_analytic"] = own.adherence()
    (eval_dir / f"{name}.json").write_text(json.dumps(row))
    (eval_dir / f"{name}.summary.json").write_text(json.dumps({"image_passes": 1000, "iters": 10 * k}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, world):
    out = tmp_path_factory.mktemp("methods")
    ev = out / "eval"
    ev.mkdir()
    _write_row(ev, "ceiling", 64, 0.95, world, 0.95, seed=1)
    _write_row(ev, "mm-alt-k1", 1, 0.3, world, 0.3, seed=2)
    _write_row(ev, "emd-k1", 1, 0.9, world, 0.85, seed=3)
    _write_row(ev, "mm-alt-k2", 2, 0.7, world, 0.7, seed=4)
    _write_row(ev, "pd-k2", 2, 0.68, world, None, seed=5)  # no analytic sidecar: its cells stay empty
    (ev / "notes.json").write_text("{}")  # not a row: left out with a warning
    return out


def test_rows_are_read_by_method_and_k(run_dir):
    rows, ceiling = load_rows(run_dir)
    assert [(r.method, r.k) for r in rows] == [("mm-alt", 1), ("emd", 1), ("mm-alt", 2), ("pd", 2)]
    assert ceiling is not None and ceiling.k == 64


def test_the_page_holds_both_judges_the_paired_differences_and_the_winners(run_dir):
    text, won = methods_markdown(run_dir)
    assert "| teacher ceiling (64 steps) |" in text
    for method, k in (("emd", 1), ("mm-alt", 1), ("pd", 2)):
        assert f"| {method} | {k} | 1000 | {10 * k} |" in text
    assert text.count("| teacher ceiling | ") == 4  # every row against the ceiling
    assert "| 1 | emd | mm-alt |" in text and "| 2 | pd | mm-alt |" in text
    emd_vs_mm = next(line for line in text.splitlines() if line.startswith("| 1 | emd | mm-alt |"))
    assert emd_vs_mm.count("*") >= 2  # FD and adherence resolved in emd's favour
    pd_line = next(line for line in text.splitlines() if line.startswith("| pd | 2 |"))
    assert "- | - | -" in pd_line  # no analytic judge for this row
    assert won[1]["winner"] == "emd-k1" and won[1]["dominated_by"]["mm-alt-k1"] == ["emd-k1"]
    assert won[2]["winner"] in ("mm-alt-k2", "pd-k2")


def test_main_writes_the_page_the_plot_and_the_winners(run_dir, tmp_path, capsys):
    md = tmp_path / "results" / "methods.md"
    assert main([str(run_dir), str(md)]) == 0
    assert (tmp_path / "results" / "methods" / "methods_steps.png").is_file()
    assert json.loads((tmp_path / "results" / "methods" / "winners.json").read_text())["1"]["winner"] == "emd-k1"
    assert "methods/methods_steps.png" in md.read_text()
    assert main([str(run_dir), str(md), "--winners"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "1 emd-k1"


def test_an_empty_run_directory_is_an_error(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(FileNotFoundError, match="no <method>-k<K>"):
        methods_markdown(tmp_path)
