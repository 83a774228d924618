import re

import numpy as np
import pytest

import shapesworld as W
from shapesworld import captions as C


def _held_out_words() -> set[str]:
    words = set()
    for table in (C.COLOUR_WORDS, C.SHAPE_WORDS, C.SIZE_WORDS, C.CELL_WORDS, C.BACKGROUND_WORDS):
        for _, held in table.values():
            words |= set(held)
    return words


def test_training_captions_never_use_held_out_words_or_templates():
    held = _held_out_words()
    frames = {"canvas", "backdrop", "towards", "together with", "as well as", "please", "render", "coloured"}
    for i in range(4000):
        cap = W.sample(11, i).caption.lower()
        for w in held | frames:
            assert not re.search(rf"\b{re.escape(w)}\b", cap), (w, cap)


def test_held_out_captions_use_held_out_frames_and_some_held_out_words():
    held = _held_out_words()
    caps = [W.sample(11, i, phrasing="held_out").caption.lower() for i in range(500)]
    assert all(
        any(f in c for f in ("towards", "canvas", "backdrop", "please draw", "render", "there is")) for c in caps
    )
    with_word = np.mean([any(re.search(rf"\b{re.escape(w)}\b", c) for w in held) for c in caps])
    assert 0.3 < with_word < 1.0


def test_captions_vary_as_people_write():
    caps = [W.sample(12, i).caption for i in range(3000)]
    assert len(set(caps)) > 2500
    assert any(c.isupper() for c in caps) and any(c[0].isupper() and not c.isupper() for c in caps)
    assert any(c.endswith(".") for c in caps) and any(";" in c for c in caps)
    assert any("grey" in c.lower() for c in caps) and any("gray" in c.lower() for c in caps)
    # the position sometimes comes first: "in the top left, a red circle"
    assert any(re.match(r"^(in|at|on|along) the [a-z -]+, ", c.lower()) for c in caps)


def test_fixed_mentions_give_the_same_constraints_in_either_phrasing():
    item = W.sample(3, 5, p_two=1.0)
    rng = W.scene_rng(99, 0)
    text, mentions, bg = C.caption_scene(item.scene, rng, "held_out", item.mentions, item.background_mentioned)
    assert (mentions, bg) == (item.mentions, item.background_mentioned)
    assert W.parse_prompt(text) == W.parse_prompt(item.caption)


@pytest.mark.parametrize(
    ("prompt", "spec"),
    [
        (
            "In the upper left corner, a scarlet disc and a tiny aqua box towards the lower right.",
            W.PromptSpec(None, (W.ObjectSpec("red", "circle", None, 0), W.ObjectSpec("cyan", "square", "small", 8))),
        ),
        (
            "BIG GREEN PLUS SIGN, CENTRE; GREY BACKGROUND",
            W.PromptSpec("gray", (W.ObjectSpec("green", "cross", "large", 4),)),
        ),
        ("a violet pyramid in the middle", W.PromptSpec(None, (W.ObjectSpec("purple", "triangle", None, 4),))),
    ],
)
def test_parse_reads_synonyms_and_orders(prompt, spec):
    assert W.parse_prompt(prompt) == spec


def test_parse_refuses_two_positions_for_one_object_and_text_outside_the_vocabulary():
    with pytest.raises(ValueError, match="more than one position"):
        W.parse_prompt("a red circle at the top at the bottom")
    with pytest.raises(ValueError, match="colour and a shape"):
        W.parse_prompt("a photograph of a cat")


def test_unknown_words_and_vocabulary():
    assert W.unknown_words("A red circle next to a DOG, please!") == ["next", "dog"]
    assert W.unknown_words(W.sample(4, 1).caption) == []
    for i in range(300):
        assert W.unknown_words(W.sample(4, i, phrasing="held_out").caption) == []
    vocab = W.vocabulary()
    assert set(vocab) == {"colours", "shapes", "sizes", "positions", "backgrounds"}
    assert {"red", "crimson", "grey"} <= set(vocab["colours"]) | set(vocab["backgrounds"])
    for p in W.EXAMPLE_PROMPTS:
        assert W.unknown_words(p) == [] and W.parse_prompt(p).objects


def test_the_drawn_template_is_recorded_and_the_caption_unchanged():
    for i in range(300):
        item = W.sample(5, i)
        rng = W.scene_rng(5, i)
        scene, _ = W.sample_scene(rng, "train")
        assert C.caption_scene(scene, rng, "train")[0] == item.caption  # recording it draws nothing more
        assert item.template in C.TEMPLATES["train"][item.background_mentioned]
        pattern = re.escape(item.template).replace(r"\{objs\}", ".+").replace(r"\{terse\}", ".+")
        pattern = pattern.replace(r"\{bg\}", r"\w+")
        assert re.fullmatch(pattern, item.caption.lower().rstrip(".")), (item.template, item.caption)
