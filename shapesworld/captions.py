"""Captions of shapes-world scenes in the many ways people write them, and reading them back.

People do not type templates (`docs/shapes-world.md`, "Captions"): the same scene is "a big red
circle in the top left", "red circle, top-left", "In the upper left corner, a scarlet disc." and
so on. The captioner draws, deterministically from the scene's generator, a template, a phrase
for every word (synonyms), an order (position before or after the object), optional articles,
case and final punctuation. Two *phrasing sets* keep some templates and synonyms out of training
altogether (`phrasing="held_out"`), so evaluation can measure whether the pretrained text encoder
carries the meaning across wordings the denoiser never saw.

`parse_prompt` reads any prompt in the vocabulary (either set) back into what it constrains,
and `unknown_words` lists the words of a prompt that are outside it: the service warns about
them rather than refusing the request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from shapesworld.scene import BACKGROUNDS, CELLS, COLOURS, HELD_OUT, SHAPES, SIZES, Scene, ShapeObject

Phrasing = Literal["train", "held_out"]

P_MENTION_SIZE = 0.7
P_MENTION_POSITION = 0.7
P_MENTION_BACKGROUND = 0.5

# Words for each value: (used in training captions, kept for the held-out phrasing set). The
# canonical name is always the first training word; the held-out words never appear in training.
COLOUR_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "red": (("red", "scarlet"), ("crimson",)),
    "green": (("green",), ("emerald",)),
    "blue": (("blue",), ("cobalt",)),
    "yellow": (("yellow",), ("golden",)),
    "purple": (("purple",), ("violet",)),
    "orange": (("orange",), ("tangerine",)),
    "cyan": (("cyan", "turquoise"), ("aqua",)),
    "pink": (("pink",), ("rose",)),
}
SHAPE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "circle": (("circle", "disc"), ("round dot",)),
    "square": (("square",), ("box",)),
    "triangle": (("triangle",), ("pyramid",)),
    "cross": (("cross", "plus sign"), ("plus shape",)),
}
SIZE_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "small": (("small", "little"), ("tiny",)),
    "large": (("large", "big"), ("huge",)),
}
BACKGROUND_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "white": (("white",), ()),
    "black": (("black",), ()),
    "gray": (("gray", "grey"), ()),
}
# Cell names (bare, as in terse captions), then full position phrases.
CELL_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "top left": (("top left", "top-left"), ("upper left",)),
    "top": (("top",), ("top middle",)),
    "top right": (("top right", "top-right"), ("upper right",)),
    "left": (("left",), ("left-hand side",)),
    "center": (("center", "centre"), ("middle",)),
    "right": (("right",), ("right-hand side",)),
    "bottom left": (("bottom left", "bottom-left"), ("lower left",)),
    "bottom": (("bottom",), ("bottom middle",)),
    "bottom right": (("bottom right", "bottom-right"), ("lower right",)),
}
_CORNERS = {"top left", "top right", "bottom left", "bottom right"}


def _position_phrases(cell: str, word: str, phrasing: Phrasing) -> tuple[str, ...]:
    """Prepositional phrases placing an object in `cell`, named `word`."""
    if phrasing == "held_out":
        return (f"towards the {word}",)
    if cell in _CORNERS:
        return (f"in the {word}", f"at the {word}", f"in the {word} corner")
    if cell in ("left", "right"):
        return (f"on the {word}", f"at the {word}", f"on the {word} side")
    if cell == "center":
        return (f"in the {word}", f"at the {word}")
    return (f"at the {word}", f"along the {word}")


# Templates: {objs} objects with positions in full, {terse} the short form, {bg} the background.
TEMPLATES: dict[Phrasing, dict[bool, tuple[str, ...]]] = {
    "train": {
        False: (
            "{objs}",
            "a picture of {objs}",
            "an image showing {objs}",
            "{terse}",
            "a drawing of {objs}",
            "an illustration with {objs}",
        ),
        True: (
            "{objs} on a {bg} background",
            "on a {bg} background: {objs}",
            "{terse}, on a {bg} background",
            "a picture of {objs}, {bg} background",
            "{objs} against a {bg} background",
            "{bg} background with {objs}",
            "{terse}; {bg} background",
        ),
    },
    "held_out": {
        False: ("there is {objs}", "please draw {objs}", "render {objs}"),
        True: (
            "{objs} over a plain {bg} backdrop",
            "a {bg} canvas showing {objs}",
            "please draw {objs} on {bg}",
        ),
    },
}
JOINERS: dict[Phrasing, tuple[str, ...]] = {"train": (" and ", "; "), "held_out": (" together with ", " as well as ")}
# Words that carry no constraint but are part of the vocabulary (templates and joiners).
FILLER = frozenset(
    "a an the of in on at to with and along towards showing picture image drawing illustration there is please "
    "draw render over plain backdrop canvas background corner side hand coloured colored together as well".split()
)


@dataclass(frozen=True)
class Mention:
    """Which attributes a caption states (colour and shape always are)."""

    size: bool
    position: bool


def _word(
    table: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], key: str, phrasing: Phrasing, rng: np.random.Generator
) -> str:
    """A word for `key`: in the held-out set, a held-out synonym half the time (people mix words)."""
    train, held = table[key]
    use_held = phrasing == "held_out" and held and rng.random() < 0.5
    return _pick(held if use_held else train, rng)


def _pick(options: tuple[str, ...], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _object_phrases(
    obj: ShapeObject, m: Mention, rng: np.random.Generator, phrasing: Phrasing, position_first: bool
) -> tuple[str, str]:
    """(full, terse) phrases for one object: 'a large red circle in the top left', 'large red circle, top left'."""
    colour = _word(COLOUR_WORDS, obj.colour, phrasing, rng)
    shape = _word(SHAPE_WORDS, obj.shape, phrasing, rng)
    size = _word(SIZE_WORDS, obj.size, phrasing, rng) if m.size else None
    if phrasing == "held_out" and rng.random() < 0.5:
        words = ([size] if size else []) + [f"{colour} coloured", shape]
    else:
        words = ([size] if size else []) + [colour, shape]
    bare = " ".join(words)
    article = "" if rng.random() < 0.2 else ("an " if bare[0] in "aeiou" else "a ")
    noun = article + bare
    if not m.position:
        return noun, bare
    cell = CELLS[obj.cell]
    word = _word(CELL_WORDS, cell, phrasing, rng)
    where = _pick(_position_phrases(cell, word, phrasing), rng)
    full = f"{where}, {noun}" if position_first and rng.random() < 0.3 else f"{noun} {where}"
    return full, f"{bare}, {word}"


def caption_scene(
    scene: Scene,
    rng: np.random.Generator,
    phrasing: Phrasing = "train",
    mentions: tuple[Mention, ...] | None = None,
    background: bool | None = None,
) -> tuple[str, tuple[Mention, ...], bool]:
    """Describe a scene: colour and shape always; size, position (0.7 each) and background (0.5).

    `mentions` / `background` fix what is stated (the evaluation re-captions a scene in the
    held-out phrasing stating exactly what its training-phrasing caption states); when None they
    are drawn from `rng`, which then also draws the wording.
    """
    text, mentions, background, _ = caption_scene_template(scene, rng, phrasing, mentions, background)
    return text, mentions, background


def caption_scene_template(
    scene: Scene,
    rng: np.random.Generator,
    phrasing: Phrasing = "train",
    mentions: tuple[Mention, ...] | None = None,
    background: bool | None = None,
) -> tuple[str, tuple[Mention, ...], bool, str]:
    """`caption_scene`, and the template it drew (one of `TEMPLATES[phrasing][background]`), so that
    evaluation can break adherence down by the form of the prompt. The same draws, the same text."""
    if mentions is None:
        mentions = tuple(
            Mention(bool(rng.random() < P_MENTION_SIZE), bool(rng.random() < P_MENTION_POSITION)) for _ in scene.objects
        )
    if background is None:
        background = bool(rng.random() < P_MENTION_BACKGROUND)
    template = _pick(TEMPLATES[phrasing][background], rng)
    # "in the top left, a red circle" reads well only where the objects open a sentence or clause.
    position_first = template.startswith("{objs}") or ": {objs}" in template
    phrases = [
        _object_phrases(o, m, rng, phrasing, position_first) for o, m in zip(scene.objects, mentions, strict=True)
    ]
    joiner = _pick(JOINERS[phrasing], rng)
    objs = joiner.join(p[0] for p in phrases)
    terse = joiner.join(p[1] for p in phrases)
    bg = _word(BACKGROUND_WORDS, scene.background, phrasing, rng)
    text = template.format(objs=objs, terse=terse, bg=bg)
    style = rng.random()
    if style < 0.2:
        text = text[0].upper() + text[1:]
    elif style < 0.25:
        text = text.upper()
    if rng.random() < 0.2:
        text += "."
    return text, mentions, background, template


# --- reading prompts back -------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """What a prompt says about one object; None means the prompt leaves it free."""

    colour: str
    shape: str
    size: str | None = None
    cell: int | None = None


@dataclass(frozen=True)
class PromptSpec:
    background: str | None
    objects: tuple[ObjectSpec, ...]

    @property
    def held_out(self) -> bool:
        return any((o.colour, o.shape) in HELD_OUT for o in self.objects)


def spec_of(scene: Scene, mentions: tuple[Mention, ...], background: bool) -> PromptSpec:
    """What a caption with these mentions constrains, straight from the record (no parsing)."""
    return PromptSpec(
        scene.background if background else None,
        tuple(
            ObjectSpec(o.colour, o.shape, o.size if m.size else None, o.cell if m.position else None)
            for o, m in zip(scene.objects, mentions, strict=True)
        ),
    )


def _synonyms() -> list[tuple[str, str]]:
    """(phrase, canonical token) for every word of every value, longest phrase first."""
    pairs: list[tuple[str, str]] = []
    for table in (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, BACKGROUND_WORDS, CELL_WORDS):
        for canonical, (train, held) in table.items():
            token = "<" + canonical.replace(" ", "_") + ">"
            pairs += [(w.replace("-", " "), token) for w in (*train, *held)]
    pairs += [("middle", "<center>"), ("upper", "<top>"), ("lower", "<bottom>")]
    return sorted(set(pairs), key=lambda p: -len(p[0]))


_SYNONYMS = _synonyms()
_SYNONYM_RE = re.compile(r"\b(" + "|".join(re.escape(p) for p, _ in _SYNONYMS) + r")\b")
_TOKEN_OF = dict(_SYNONYMS)
_SPLIT_RE = re.compile(r"\band\b|;|\btogether with\b|\bas well as\b")


def _normalise(prompt: str) -> str:
    text = prompt.lower().replace("-", " ")
    text = re.sub(r"[^a-z<>_;\s]", " ", text)
    return _SYNONYM_RE.sub(lambda m: " " + _TOKEN_OF[m.group(1)] + " ", text)


def _canon(token: str) -> str:
    return token.strip("<>").replace("_", " ")


def _parse_object(clause: str, original: str) -> ObjectSpec:
    tokens = [_canon(t) for t in re.findall(r"<[a-z_]+>", clause)]
    colour = next((t for t in tokens if t in COLOURS), None)
    shape = next((t for t in tokens if t in SHAPES), None)
    if colour is None or shape is None:
        raise ValueError(f"cannot find a colour and a shape in {original!r}")
    size = next((t for t in tokens if t in SIZES), None)
    cells = [t for t in tokens if t in CELLS]
    # "upper left" and "lower right" normalise to two tokens ("top", "left"): join them back.
    if len(cells) == 2 and f"{cells[0]} {cells[1]}" in CELLS:
        cells = [f"{cells[0]} {cells[1]}"]
    if len(cells) > 1:
        raise ValueError(f"more than one position for one object in {original!r}")
    return ObjectSpec(colour, shape, size, CELLS.index(cells[0]) if cells else None)


def parse_prompt(prompt: str) -> PromptSpec:
    """Read a shapes-world prompt (any phrasing of either set) back into what it constrains.

    Evaluation and the service use it on prompts they did not generate. Raises ValueError for
    text outside the vocabulary (no colour and shape for some object).
    """
    text = _normalise(prompt)
    background = None
    for name in BACKGROUNDS:
        token = f"<{name}>"
        if token in text:
            background = name
            text = text.replace(token, " ")
    # Clauses with no word of an object ("; grey background" once the colour is taken) are filler.
    parts = [p for p in _SPLIT_RE.split(text) if "<" in p]
    if not parts:
        raise ValueError(f"cannot find a colour and a shape in {prompt!r}")
    return PromptSpec(background, tuple(_parse_object(p, prompt) for p in parts))


def vocabulary() -> dict[str, list[str]]:
    """The words a prompt may use, by category (synonyms of both phrasing sets included)."""
    out: dict[str, list[str]] = {}
    for name, table in (
        ("colours", COLOUR_WORDS),
        ("shapes", SHAPE_WORDS),
        ("sizes", SIZE_WORDS),
        ("positions", CELL_WORDS),
        ("backgrounds", BACKGROUND_WORDS),
    ):
        out[name] = [w for train, held in table.values() for w in (*train, *held)]
    return out


_KNOWN = (
    frozenset(w for words in vocabulary().values() for phrase in words for w in phrase.replace("-", " ").split())
    | FILLER
    | {"upper", "lower", "middle", "colour", "color"}
)


def unknown_words(prompt: str) -> list[str]:
    """Words of `prompt` outside the vocabulary, in order, each once (case and punctuation ignored)."""
    seen: dict[str, None] = {}
    for w in re.findall(r"[a-z]+", prompt.lower()):
        if w not in _KNOWN:
            seen.setdefault(w, None)
    return list(seen)


EXAMPLE_PROMPTS: tuple[str, ...] = (
    "a large red circle in the top left on a white background",
    "a small blue square at the bottom",
    "yellow triangle, center, on a black background",
    "a green cross on the left and a pink circle on the right",
    "on a gray background: a big orange triangle at the top and a small cyan square at the bottom",
)
