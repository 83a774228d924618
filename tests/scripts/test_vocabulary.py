"""The vocabulary measurement (scripts.vocabulary): its scenes and prompts, figures, listing and files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import shapesworld as shapes
from scripts.vocabulary import cases, is_listed, listing, markdown, prompt, ratio_figures, write
from shapesworld.measured_vocabulary import alternatives, parse_measured


@pytest.mark.parametrize("x", alternatives()[::3], ids=lambda x: x.word)
def test_a_word_and_its_canonical_word_prompt_the_same_constraint(x):
    """The two prompts of a scene differ in one word and both read back as what the scene is scored against."""
    for c in cases(x.category, x.value, 6):
        canonical, word = prompt(c, x.category, x.canonical), prompt(c, x.category, x.word)
        bare = [re.sub(r"^an? ", "", p) for p in (word, canonical)]
        assert word != canonical and bare[0].replace(x.word, x.canonical) == bare[1]
        assert shapes.parse_prompt(canonical) == c.spec
        assert shapes.parse_prompt(word) == c.spec


def test_the_scenes_of_a_value_hold_it_are_one_object_training_pairs_and_are_fixed():
    a = cases("positions", "top left", 20)
    assert [c.scene for c in a] == [c.scene for c in cases("positions", "top left", 20)]
    assert all(len(c.scene.objects) == 1 and c.scene.objects[0].cell == 0 for c in a)
    assert not any((c.scene.objects[0].colour, c.scene.objects[0].shape) in shapes.HELD_OUT for c in a)
    assert len({c.seed for c in a}) == 20
    assert {c.seed for c in a}.isdisjoint({c.seed for c in cases("colours", "red", 20)})
    # the attributes left free keep their spread
    assert len({c.scene.objects[0].colour for c in a}) > 3 and len({c.scene.background for c in a}) > 1


def test_ratio_figures_pair_the_scenes_and_bound_the_ratio():
    rng = np.random.default_rng(0)
    canonical = rng.random(200) < 0.9
    same = ratio_figures(canonical, canonical)
    assert same["ratio"] == 1.0 and same["ratio_ci"] == [1.0, 1.0]  # paired: no spread when equal
    worse = ratio_figures(canonical & (rng.random(200) < 0.2), canonical)
    assert worse["ratio"] < 0.3 and worse["ratio_ci"][1] < 0.85 and not is_listed(worse)
    assert is_listed({"ratio": 0.85}) and not is_listed({"ratio": 0.84}) and not is_listed({"ratio": None})
    assert ratio_figures(np.zeros(4), np.zeros(4))["ratio"] is None
    with pytest.raises(ValueError, match="paired"):
        ratio_figures(np.ones(3), np.ones(4))


def _fake_model(listed_words: set[str]) -> dict:
    rows = []
    for x in alternatives():
        ratio = 1.0 if x.word in listed_words else 0.2
        rows.append({"category": x.category, "value": x.value, "word": x.word, "canonical": x.canonical,
                     "set": x.phrasing, "adherence": 0.9 * ratio, "adherence_ci": [0.0, 1.0],
                     "canonical_adherence": 0.9, "ratio": ratio, "ratio_ci": [ratio - 0.1, ratio + 0.1],
                     "listed": ratio >= 0.85})  # fmt: skip
    return {"n_per_word": 8, "words": rows}


def test_the_listing_keeps_canonical_words_and_the_listed_others_in_table_order(tmp_path):
    data = {
        "command": "python -m scripts.vocabulary",
        "machine": "test",
        "threshold": 0.85,
        "default_model": "m",
        "models": {"m": _fake_model({"scarlet", "big", "grey"}), "n": _fake_model({"scarlet"})},
    }
    out = listing(data["models"])
    assert out["m"]["colours"] == ["red", "scarlet", "green", "blue", "yellow", "purple", "orange", "cyan", "pink"]
    assert out["m"]["sizes"] == ["small", "large", "big"] and out["n"]["sizes"] == ["small", "large"]
    package = tmp_path / "vocabulary.json"
    write(data, results=tmp_path / "results", package_file=package)
    assert parse_measured(json.loads(package.read_text())).listed("n")["backgrounds"] == ["white", "black", "gray"]
    table = (tmp_path / "results" / "vocabulary.md").read_text()
    assert "| colours | scarlet | red | train | 1.00 [0.90, 1.10] (0.90 vs 0.90) **listed**" in table
    assert "| colours | crimson | red | held_out | 0.20" in table and "unlisted" in table
    assert markdown(data).count("\n| ") == len(alternatives()) + 2  # the header, its rule, a row a word
