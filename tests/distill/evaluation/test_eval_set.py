"""The fixed evaluation prompt set (distill.evaluation.eval_set): its three parts, their shares and their twins."""

from __future__ import annotations

import shapesworld as shapes
from distill.evaluation.eval_set import HELD_OUT_PAIR_SHARE, HELD_OUT_PHRASING_SHARE, eval_set


def test_the_parts_come_in_order_with_their_shares():
    items = eval_set(200)
    groups = [e.group for e in items]
    n_pair, n_phr = round(200 * HELD_OUT_PAIR_SHARE), round(200 * HELD_OUT_PHRASING_SHARE)
    n_in = 200 - n_pair - n_phr
    assert groups == ["train"] * n_in + ["held_out_pair"] * n_pair + ["held_out_phrasing"] * n_phr
    assert [e.held_out for e in items] == [g == "held_out_pair" for g in groups]


def test_held_out_pairs_lead_with_a_pair_never_trained_on_and_training_items_have_none():
    for e in eval_set(200):
        pairs = {(o.colour, o.shape) for o in e.item.scene.objects}
        if e.group == "held_out_pair":
            first = e.item.scene.objects[0]
            assert (first.colour, first.shape) in shapes.HELD_OUT
        else:
            assert not pairs & shapes.HELD_OUT


def test_a_held_out_phrasing_is_its_twins_scene_and_seed_in_other_words():
    items = eval_set(200)
    phrased = [e for e in items if e.group == "held_out_phrasing"]
    assert phrased
    reworded = 0
    for e in phrased:
        twin = items[e.twin]
        assert twin.group == "train"
        assert (e.item.scene, e.spec, e.seed) == (twin.item.scene, twin.spec, twin.seed)
        reworded += e.item.caption != twin.item.caption
    assert reworded >= 0.9 * len(phrased)


def test_the_set_is_fixed_and_a_bigger_one_starts_with_the_same_prompts():
    a, b = eval_set(100), eval_set(100)
    assert [e.item.caption for e in a] == [e.item.caption for e in b]
    assert [e.seed for e in a if e.group != "held_out_phrasing"] == list(
        range(80)
    )  # 70 in distribution, 10 held-out pairs
    # in-distribution items are one stream: a bigger set starts with the same prompts
    big = eval_set(200)
    assert [e.item.caption for e in a[:70]] == [e.item.caption for e in big[:70]]


def test_sets_too_small_for_their_twins_stay_consistent():
    for n in (1, 2, 3, 5):
        items = eval_set(n)
        assert 0 < len(items) <= n
        assert all(items[e.twin].group == "train" for e in items if e.group == "held_out_phrasing")
