"""The measured vocabulary (shapesworld.measured_vocabulary): the committed listing, its reading, the unlisted words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import shapesworld as shapes
from shapesworld.measured_vocabulary import (
    TABLES,
    THRESHOLD,
    VOCABULARY_FILE,
    VocabularyError,
    alternatives,
    canonical_words,
    load_measured,
    parse_measured,
    unlisted_words,
)

RESULTS = Path(__file__).resolve().parents[2] / "results" / "vocabulary" / "vocabulary.json"


def _listing(**models: dict[str, list[str]]) -> dict:
    return {"threshold": THRESHOLD, "default_model": next(iter(models), None), "models": models}


def test_every_word_of_both_phrasing_sets_is_canonical_or_an_alternative():
    words = {(x.category, x.word) for x in alternatives()}
    canonical = {(c, w) for c, ws in canonical_words().items() for w in ws}
    assert not words & canonical
    assert words | canonical == {(c, w) for c, ws in shapes.vocabulary().items() for w in ws}
    assert {x.word for x in alternatives() if x.phrasing == "held_out"} >= {"crimson", "cobalt", "pyramid"}
    assert next(x for x in alternatives() if x.word == "disc").canonical == "circle"


def test_the_committed_listing_is_exactly_the_words_measured_at_or_above_the_threshold():
    """/info's list comes from shapesworld/measured_vocabulary.json; it must be what the measurement found."""
    results = json.loads(RESULTS.read_text())
    listing = json.loads(VOCABULARY_FILE.read_text())
    assert listing["threshold"] == results["threshold"] == THRESHOLD == 0.85
    assert listing["default_model"] == results["default_model"]
    assert set(listing["models"]) == set(results["models"]) and results["default_model"] in results["models"]
    for name, figures in results["models"].items():
        measured = {(r["category"], r["word"]) for r in figures["words"]}
        every = {(x.category, x.word) for x in alternatives()}
        # every word measured on the default model; another model's unmeasured words are unlisted
        assert measured == every if name == results["default_model"] else measured <= every, name
        passing = {
            (r["category"], r["word"]) for r in figures["words"] if r["ratio"] is not None and r["ratio"] >= 0.85
        }
        assert {(r["category"], r["word"]) for r in figures["words"] if r["listed"]} == passing
        listed = {(c, w) for c, ws in listing["models"][name].items() for w in ws}
        canonical = {(c, w) for c, ws in canonical_words().items() for w in ws}
        assert listed == passing | canonical, name
    assert load_measured().listed() == listing["models"][results["default_model"]]


def test_the_example_prompts_use_only_words_the_default_model_draws():
    listed = shapes.listed_vocabulary()
    for prompt in shapes.EXAMPLE_PROMPTS:
        assert unlisted_words(prompt, listed) == [], prompt


def test_unlisted_words_name_vocabulary_phrases_whole_and_other_words_alone():
    listed = canonical_words()
    named = ["crimson", "round dot", "top-left", "glorp"]
    assert unlisted_words("A Crimson round dot, top-left; glorp!", listed) == named
    assert unlisted_words("a large red circle in the top left corner on a white background.", listed) == []
    assert unlisted_words("a  RED   circle at the top left", listed) == []
    assert unlisted_words("a red dot", listed) == ["dot"]  # a piece of a phrase alone was never shown either
    with_synonym = {**listed, "colours": [*listed["colours"], "crimson"]}
    assert unlisted_words("a crimson circle", with_synonym) == []
    assert unlisted_words("", listed) == []


def test_canonical_of_maps_a_word_to_the_word_the_models_were_trained_on():
    assert shapes.canonical_of("crimson") == "red" and shapes.canonical_of("Pyramid") == "triangle"
    assert shapes.canonical_of("upper left") == "top left" and shapes.canonical_of("dragon") is None


def test_a_model_the_listing_does_not_name_gets_the_words_every_measured_model_draws():
    base = canonical_words()
    a = {**base, "colours": [*base["colours"], "scarlet", "crimson"]}
    b = {**base, "colours": [*base["colours"], "scarlet"]}
    m = parse_measured(_listing(a=a, b=b))
    assert m.listed("a")["colours"][-2:] == ["scarlet", "crimson"]
    assert m.listed() == m.listed("a")  # the default model
    assert m.listed("new")["colours"] == [*base["colours"], "scarlet"]
    assert parse_measured({"threshold": 0.85, "models": {}}).listed("x") == base


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("models"), "needs 'threshold' and 'models'"),
        (lambda d: d["models"]["m"].pop("sizes"), "has categories"),
        (lambda d: d["models"]["m"]["colours"].append("dragon"), "dragon"),
        (lambda d: d["models"]["m"]["colours"].remove("red"), "canonical words"),
    ],
)
def test_a_malformed_listing_is_a_clear_error(change, message):
    data = _listing(m={c: list(ws) for c, ws in canonical_words().items()})
    change(data)
    with pytest.raises(VocabularyError, match=message):
        parse_measured(data)


def test_a_missing_or_broken_listing_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(VocabularyError, match=r"scripts\.vocabulary"):
        load_measured(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(VocabularyError, match="not JSON"):
        load_measured(tmp_path / "bad.json")


def test_the_tables_are_the_captioners():
    assert set(TABLES) == set(shapes.vocabulary())
