"""The shapes world: procedurally rendered, captioned scenes (`shapes-world.md`).

Kept in the numpy-only core (not in `distill/`) because both sides use its vocabulary: training
renders it, evaluation parses prompts with it, and the service's load benchmarks draw prompts from
it. A scene is a small record; `render` draws it anti-aliased (4x supersampling, then a box
downsample) and `caption` describes it in one of several phrasings. Everything is deterministic
given a `numpy.random.Generator`, and `scene_rng(seed, index)` makes one per (seed, index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import permutations
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 190),
    "orange": (245, 140, 30),
    "cyan": (40, 200, 210),
    "pink": (240, 120, 180),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = {"small": 0.12, "large": 0.22}  # half-extent r as a fraction of the resolution
CELLS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
CELL_CENTRES = (0.25, 0.5, 0.75)
POSITION_JITTER = 0.03
COLOUR_JITTER = 12
HELD_OUT = frozenset({("pink", "triangle"), ("cyan", "cross"), ("orange", "square"), ("purple", "circle")})
P_ONE_OBJECT = 0.6
P_MENTION_SIZE = 0.7
P_MENTION_POSITION = 0.7
P_MENTION_BACKGROUND = 0.5
SUPERSAMPLE = 4

Mode = Literal["train", "held_out", "all"]

# How each cell is named after a preposition: "in the top left", "at the top", "on the left".
POSITION_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str
    cell: int  # 0..8, row-major from the top left


@dataclass(frozen=True)
class Scene:
    """The semantic record of an image: what the evaluator predicts and captions describe."""

    background: str
    objects: tuple[ShapeObject, ...]

    def to_dict(self) -> dict:
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}

    @staticmethod
    def from_dict(d: dict) -> Scene:
        return Scene(d["background"], tuple(ShapeObject(**o) for o in d["objects"]))


@dataclass(frozen=True)
class Placement:
    """Rendering details that the record leaves free: exact centre and colour jitter."""

    cx: float  # in units of the resolution
    cy: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Mention:
    """Which attributes a caption states (colour and shape always are)."""

    size: bool
    position: bool


@dataclass(frozen=True)
class CaptionedScene:
    scene: Scene
    placements: tuple[Placement, ...]
    caption: str
    mentions: tuple[Mention, ...]
    background_mentioned: bool


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for item `index` of the stream with `seed` (independent of other items)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))


def _pair_allowed(colour: str, shape: str, mode: Mode) -> bool:
    held = (colour, shape) in HELD_OUT
    return mode == "all" or (mode == "train" and not held) or (mode == "held_out" and held)


def _overlaps(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Bounding-box test on (cx, cy, r): objects may not touch (`shapes-world.md`)."""
    return abs(a[0] - b[0]) < a[2] + b[2] and abs(a[1] - b[1]) < a[2] + b[2]


def _place(obj: ShapeObject, rng: np.random.Generator) -> Placement:
    """Position jitter (up to 0.03 R) around the cell centre and per-channel colour jitter."""
    jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + jitter, 0, 255))
    return Placement(float(CELL_CENTRES[obj.cell % 3] + jx), float(CELL_CENTRES[obj.cell // 3] + jy), rgb)  # type: ignore[arg-type]


def sample_scene(rng: np.random.Generator, mode: Mode = "train") -> tuple[Scene, tuple[Placement, ...]]:
    """Draw a scene and its placements.

    In "train" mode no object is a held-out colour-shape pair; in "held_out" mode the first
    object always is one (the second, if any, is an ordinary pair); "all" draws freely.
    Two-object scenes are redrawn until the objects' boxes do not overlap.
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    n = 1 if rng.random() < P_ONE_OBJECT else 2
    colours, shapes = list(COLOURS), list(SHAPES)
    while True:
        objects: list[ShapeObject] = []
        boxes: list[tuple[float, float, float]] = []
        placements: list[Placement] = []
        for k in range(n):
            first_mode: Mode = mode if (mode != "held_out" or k == 0) else "train"
            while True:
                colour, shape = str(rng.choice(colours)), str(rng.choice(shapes))
                if _pair_allowed(colour, shape, first_mode):
                    break
            obj = ShapeObject(colour, shape, str(rng.choice(list(SIZES))), int(rng.integers(9)))
            placement = _place(obj, rng)
            objects.append(obj)
            boxes.append((placement.cx, placement.cy, SIZES[obj.size]))
            placements.append(placement)
        if n == 1 or (objects[0].cell != objects[1].cell and not _overlaps(boxes[0], boxes[1])):
            return Scene(background, tuple(objects)), tuple(placements)


def replace(scene: Scene, rng: np.random.Generator) -> tuple[Placement, ...]:
    """New placements (position and colour jitter) for the same record: another rendering of it.

    Redraws until the objects do not overlap, which always succeeds because the record came from
    a non-overlapping placement. Used to build a second reference set for the same prompts.
    """
    while True:
        placements = tuple(_place(obj, rng) for obj in scene.objects)
        boxes = [(p.cx, p.cy, SIZES[o.size]) for o, p in zip(scene.objects, placements, strict=True)]
        if len(boxes) < 2 or not _overlaps(boxes[0], boxes[1]):
            return placements


def render(scene: Scene, placements: tuple[Placement, ...], resolution: int = 32) -> np.ndarray:
    """Render to an (R, R, 3) uint8 array: draw at 4R, then box-downsample (anti-aliasing).

    Shapes inside the box of half-extent r: a circle of radius r; a square of half-side 0.9 r; a
    triangle (apex up) with apex (cx, cy - r) and base corners (cx -/+ r, cy + r); a plus-sign
    cross of total extent 2r whose arms are 0.4 of that length wide.
    """
    if resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
    big = resolution * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for obj, pl in zip(scene.objects, placements, strict=True):
        r = SIZES[obj.size] * big
        cx, cy = pl.cx * big, pl.cy * big
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=pl.rgb)
        elif obj.shape == "square":
            h = 0.9 * r
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=pl.rgb)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=pl.rgb)
        elif obj.shape == "cross":
            a = 0.4 * r  # half of the arm width 0.4 * 2r
            draw.rectangle([cx - r, cy - a, cx + r, cy + a], fill=pl.rgb)
            draw.rectangle([cx - a, cy - r, cx + a, cy + r], fill=pl.rgb)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}")
    return np.asarray(img.reduce(SUPERSAMPLE), dtype=np.uint8)


# --- captions -------------------------------------------------------------------------------


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(obj: ShapeObject, m: Mention, with_article: bool = True) -> str:
    words = ([obj.size] if m.size else []) + [obj.colour, obj.shape]
    phrase = " ".join(words)
    return f"{_article(words[0])} {phrase}" if with_article else phrase


def _object_phrase(obj: ShapeObject, m: Mention) -> str:
    """'a large red circle in the top left'."""
    np_ = _noun_phrase(obj, m)
    return f"{np_} {POSITION_PHRASES[CELLS[obj.cell]]}" if m.position else np_


def _object_terse(obj: ShapeObject, m: Mention) -> str:
    """'large red circle, top left'."""
    np_ = _noun_phrase(obj, m, with_article=False)
    return f"{np_}, {CELLS[obj.cell]}" if m.position else np_


TEMPLATES_WITH_BG = (
    "{objs} on a {bg} background",
    "on a {bg} background: {objs}",
    "{terse}, on a {bg} background",
    "a picture of {objs}, {bg} background",
)
TEMPLATES_NO_BG = (
    "{objs}",
    "a picture of {objs}",
    "{terse}",
    "an image showing {objs}",
)


def caption_scene(scene: Scene, rng: np.random.Generator) -> tuple[str, tuple[Mention, ...], bool]:
    """Describe a scene: colour and shape always; size, position (0.7 each) and background (0.5)."""
    mentions = tuple(
        Mention(bool(rng.random() < P_MENTION_SIZE), bool(rng.random() < P_MENTION_POSITION)) for _ in scene.objects
    )
    bg = bool(rng.random() < P_MENTION_BACKGROUND)
    templates = TEMPLATES_WITH_BG if bg else TEMPLATES_NO_BG
    template = templates[int(rng.integers(len(templates)))]
    objs = " and ".join(_object_phrase(o, m) for o, m in zip(scene.objects, mentions, strict=True))
    terse = " and ".join(_object_terse(o, m) for o, m in zip(scene.objects, mentions, strict=True))
    return template.format(objs=objs, terse=terse, bg=scene.background), mentions, bg


def sample(seed: int, index: int, mode: Mode = "train") -> CaptionedScene:
    """Item `index` of the shapes stream `seed`: scene, placements and caption, deterministic."""
    rng = scene_rng(seed, index)
    scene, placements = sample_scene(rng, mode)
    caption, mentions, bg = caption_scene(scene, rng)
    return CaptionedScene(scene, placements, caption, mentions, bg)


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


_CELL_WORDS = sorted(CELLS, key=len, reverse=True)  # match "top left" before "top"


def _parse_object(text: str) -> ObjectSpec:
    words = text.replace(",", " ").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    if colour is None or shape is None:
        raise ValueError(f"cannot find a colour and a shape in {text!r}")
    size = next((w for w in words if w in SIZES), None)
    rest = " " + " ".join(words[words.index(shape) + 1 :]) + " "
    cell = next((CELLS.index(c) for c in _CELL_WORDS if f" {c} " in rest), None)
    return ObjectSpec(colour, shape, size, cell)


def parse_prompt(prompt: str) -> PromptSpec:
    """Read a shapes-world prompt back into what it constrains (any of the caption templates).

    Evaluation scores adherence against this, so any prompt in the vocabulary can be scored,
    not only the ones we generated. Raises ValueError for text outside the vocabulary.
    """
    text = prompt.lower().strip()
    background = None
    for name in BACKGROUNDS:
        for pat in (f"on a {name} background", f"{name} background"):
            if pat in text:
                background = name
                text = text.replace(pat, " ")
                break
        if background:
            break
    for prefix in ("a picture of ", "an image showing "):
        text = text.replace(prefix, " ")
    text = text.replace(":", " ")
    parts = [p for p in text.split(" and ") if p.strip(" ,")]
    return PromptSpec(background, tuple(_parse_object(p) for p in parts))


def _match(scene_obj: ShapeObject | None, o: ObjectSpec) -> dict[str, bool]:
    if scene_obj is None:
        return {"colour": False, "shape": False, "size": False, "position": False}
    return {
        "colour": scene_obj.colour == o.colour,
        "shape": scene_obj.shape == o.shape,
        "size": o.size is None or scene_obj.size == o.size,
        "position": o.cell is None or scene_obj.cell == o.cell,
    }


def satisfies(scene: Scene, spec: PromptSpec) -> dict[str, bool]:
    """Per-attribute check of a (predicted) scene against a prompt; key 'all' is the conjunction.

    The prompt's objects are matched to the scene's objects by the assignment that satisfies the
    most (all permutations: scenes hold at most two objects), and the object count must equal the
    prompt's.
    """
    base = {
        "count": len(scene.objects) == len(spec.objects),
        "background": spec.background is None or scene.background == spec.background,
    }
    best: dict[str, bool] | None = None
    pool: list[ShapeObject | None] = list(scene.objects) + [None] * len(spec.objects)
    for perm in permutations(range(len(pool)), len(spec.objects)):
        attrs = {"colour": True, "shape": True, "size": True, "position": True}
        for o, j in zip(spec.objects, perm, strict=True):
            for key, ok in _match(pool[j], o).items():
                attrs[key] &= ok
        if best is None or sum(attrs.values()) > sum(best.values()):
            best = attrs
    result = {**base, **(best or {})}
    result["all"] = all(result.values())
    return result
