"""Per-image measurements: the background mask and grain, the adherence groups, the intervals and the
sidecar (round trip, and the refusal to pair records of different prompts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import shapesworld as shapes
from distill.evaluation.per_image import CHECK_KEYS, PerImage, background_mask, check_paired, grain


@dataclass(frozen=True)
class Item:  # the fields of distill.evaluation.eval_set.EvalItem that per-image records read
    item: shapes.CaptionedScene
    spec: shapes.PromptSpec
    held_out: bool
    seed: int
    group: str = "train"
    twin: int | None = None


def make_items(n: int = 60) -> list[Item]:
    """n prompts: in-distribution, then held-out pairs, then held-out phrasings of the first scenes."""
    n_pair, n_phr = n // 6, n // 6
    out = []
    for i in range(n - n_pair - n_phr):
        it = shapes.sample(7, i, "train")
        spec = shapes.PromptSpec(
            it.scene.background if i % 2 else None,
            tuple(shapes.ObjectSpec(o.colour, o.shape, o.size if i % 3 else None, o.cell) for o in it.scene.objects),
        )
        out.append(Item(it, spec, False, i))
    for i in range(n_pair):
        it = shapes.sample(8, i, "held_out")
        spec = shapes.PromptSpec(None, tuple(shapes.ObjectSpec(o.colour, o.shape) for o in it.scene.objects))
        out.append(Item(it, spec, True, len(out), "held_out_pair"))
    for i in range(n_phr):
        twin = out[i]
        out.append(Item(twin.item, twin.spec, False, twin.seed, "held_out_phrasing", i))
    return out


def renders(items: list[Item], res: int = 32) -> np.ndarray:
    return np.stack([shapes.render(e.item.scene, e.item.placements, res) for e in items])


def make_record(items: list[Item], seed: int = 0, noise: float = 0.0, drop: float = 0.0, **meta) -> PerImage:
    """A record as `fewstep eval` would write it, without any model: the 'generated' images are the
    renders plus noise, the 'predicted' scenes the truth with a share `drop` losing their objects,
    the features random but paired with the reference's."""
    rng = np.random.default_rng(seed)
    ref = renders(items)
    images = np.clip(ref + rng.normal(0, noise, ref.shape), 0, 255).astype(np.uint8) if noise else ref
    truth = [e.item.scene for e in items]
    pred = [shapes.Scene(s.background, ()) if rng.random() < drop else s for s in truth]
    ref_feats = np.random.default_rng(99).standard_normal((len(items), 5)) * 3
    feats = ref_feats + rng.standard_normal(ref_feats.shape) * (1 + noise / 4)
    base = {"eval_seed": 1, "eval_set_version": 2, "evaluator_sha256": "e", "resolution": 32, "name": f"r{seed}"}
    return PerImage.build(items, pred, truth, feats, ref_feats, images, ref, {**base, **meta})


def test_background_mask_keeps_clear_of_objects_and_keeps_the_corners():
    scene = shapes.Scene("gray", (shapes.ShapeObject("red", "circle", "large", 4),))
    m = background_mask(scene, 32)
    assert not m[16, 16] and not m[16, 6] and m[0, 0] and m[31, 31]
    assert background_mask(shapes.Scene("gray", ()), 32).all()
    # Every pixel an object can paint (any jitter) is outside the mask: renders are flat on it.
    rng = np.random.default_rng(0)
    for i in range(40):
        it = shapes.sample(3, i)
        img = shapes.render(it.scene, shapes.replace(it.scene, rng), 32)
        bg = np.array(shapes.BACKGROUNDS[it.scene.background])
        assert np.all(img[background_mask(it.scene, 32)] == bg)


def test_grain_is_zero_on_renders_and_grows_with_noise():
    items = make_items(24)
    ref = renders(items)
    scenes = [e.item.scene for e in items]
    assert np.nanmax(grain(ref, scenes)) == 0.0
    rng = np.random.default_rng(0)
    levels = [np.nanmean(grain(np.clip(ref + rng.normal(0, s, ref.shape), 0, 255), scenes)) for s in (1, 3, 9)]
    assert 0 < levels[0] < levels[1] < levels[2]


def test_adherence_groups_follow_the_prompt_set_parts():
    items = make_items(60)
    rec = make_record(items, drop=0.0)
    a = rec.adherence()
    assert a["overall"] == 1.0 and a["held_out"] == 1.0 and a["held_out_phrasing"] == 1.0
    assert set(a["per_attribute"]) == {"count", "colour", "shape", "background", "size", "position"}
    dropped = make_record(items, drop=1.0)  # no objects anywhere: only the background can hold
    b = dropped.adherence()
    assert b["overall"] == 0.0 and b["per_attribute"]["count"] == 0.0 and b["per_attribute"]["background"] == 1.0
    # The reference of the held-out phrasings is their twins: the first in-distribution prompts.
    assert rec.twin.sum() == 10 and rec.twin[:10].all() and rec.group[-10:].tolist() == ["held_out_phrasing"] * 10


def test_intervals_bracket_their_figures():
    items = make_items(60)
    rec = make_record(items, noise=6.0, drop=0.3)
    ci = rec.intervals(resamples=100)
    a = rec.adherence()
    for key in ("overall", "one_object", "held_out"):
        if a[key] is not None:
            assert ci["adherence_ci"][key][0] <= a[key] <= ci["adherence_ci"][key][1]
    assert ci["adherence_ci"]["per_attribute"]["count"][1] < 1.0
    assert ci["grain_ci"][0] <= ci["grain"] <= ci["grain_ci"][1] and ci["grain"] > 3
    assert ci["grain_reference"] == 0.0 and ci["grain_reference_ci"] == [0.0, 0.0]
    assert ci["fd_ci"][0] < ci["fd_ci"][1] and ci["kid_ci"][0] < ci["kid_ci"][1]
    assert ci["bootstrap"]["resamples"] == 100


def test_sidecar_round_trip(tmp_path):
    items = make_items(30)
    rec = make_record(items, noise=2.0, drop=0.2, note="x")
    path = rec.save(tmp_path / "row.npz")
    back = PerImage.load(path)
    for f in ("captions", "seeds", "held_out", "group", "twin", "n_objects", "stated", "checks"):
        assert np.array_equal(getattr(back, f), getattr(rec, f)), f
    assert np.allclose(back.features, rec.features, rtol=1e-3, atol=1e-3)  # float16 on disk
    assert np.allclose(back.grain, rec.grain, equal_nan=True) and back.meta == rec.meta
    assert back.adherence() == rec.adherence() and back.checks.shape == (30, len(CHECK_KEYS))
    assert path.stat().st_size < 20_000
    with pytest.raises(FileNotFoundError, match="re-run"):
        PerImage.load(tmp_path / "missing.npz")


def test_check_paired_refuses_different_measurements():
    items = make_items(30)
    a = make_record(items, seed=0)
    check_paired(a, make_record(items, seed=1))  # another model on the same prompts: fine
    with pytest.raises(ValueError, match="30 images and B 24"):
        check_paired(a, make_record(make_items(24)))
    with pytest.raises(ValueError, match="eval_seed"):
        check_paired(a, make_record(items, seed=1, eval_seed=2))
    other = make_record(items, seed=1)
    other.seeds = other.seeds + 1
    with pytest.raises(ValueError, match="seed of image 0"):
        check_paired(a, other)
    other = make_record(items, seed=1)
    other.captions = np.array(["x", *other.captions[1:]])
    with pytest.raises(ValueError, match="prompt 0"):
        check_paired(a, other)


def test_adherence_by_form_and_template_partitions_the_in_distribution_prompts(tmp_path):
    from distill.evaluation.per_image import form_of

    items = make_items(120)
    rec = make_record(items, drop=0.3)
    adh = rec.adherence()
    ind = rec.group == "train"
    # Every in-distribution prompt is in exactly one form and one template; each figure is the
    # conjunction check's mean over its prompts, so the weighted forms give back the overall figure.
    forms = {k: v for k, v in adh["by_form"].items() if v is not None}
    counts = {}
    for e in [e for e, keep in zip(items, ind, strict=True) if keep]:
        key = form_of(len(e.spec.objects), any(o.cell is not None for o in e.spec.objects),
                      any(o.size is not None for o in e.spec.objects))  # fmt: skip
        counts[key] = counts.get(key, 0) + 1
    assert set(forms) == set(counts)
    assert sum(forms[k] * counts[k] for k in forms) / sum(counts.values()) == pytest.approx(adh["overall"])
    templates = adh["by_template"]
    assert set(templates) == {e.item.template for e, keep in zip(items, ind, strict=True) if keep}
    n_t = {t: sum(1 for e, keep in zip(items, ind, strict=True) if keep and e.item.template == t) for t in templates}
    assert sum(templates[t] * n_t[t] for t in templates) / sum(n_t.values()) == pytest.approx(adh["overall"])
    # The sidecar keeps the templates; one written before them loads without the breakdown.
    back = PerImage.load(rec.save(tmp_path / "r.npz"))
    assert back.adherence()["by_template"] == templates
    back.template = None
    assert "by_template" not in back.adherence()
