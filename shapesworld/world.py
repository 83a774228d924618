"""The shapes world's scenes: sampling, rendering and checking them (`docs/shapes-world.md`).

A scene is a small record (`shapesworld.scene`); `render` draws it anti-aliased (4x supersampling,
then a box downsample) and `caption_scene` (`shapesworld.captions`) describes it in one of several
phrasings. Everything is deterministic given a `numpy.random.Generator`, and
`scene_rng(seed, index)` makes one per (seed, index).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

from shapesworld.captions import (
    EXAMPLE_PROMPTS,
    Mention,
    ObjectSpec,
    Phrasing,
    PromptSpec,
    caption_scene,
    caption_scene_template,
    parse_prompt,
    spec_of,
    unknown_words,
    vocabulary,
)
from shapesworld.scene import BACKGROUNDS, CELLS, COLOURS, HELD_OUT, SHAPES, SIZES, Scene, ShapeObject

__all__ = [
    "BACKGROUNDS", "CELLS", "COLOURS", "EXAMPLE_PROMPTS", "HELD_OUT", "SHAPES", "SIZES",
    "CaptionedScene", "Mention", "ObjectSpec", "Phrasing", "Placement", "PromptSpec", "Scene", "ShapeObject",
    "caption_scene", "parse_prompt", "render", "replace", "sample", "sample_scene", "satisfies", "scene_rng",
    "spec_of", "unknown_words", "vocabulary",
]  # fmt: skip

CELL_CENTRES = (0.25, 0.5, 0.75)
POSITION_JITTER = 0.03
COLOUR_JITTER = 12
P_ONE_OBJECT = 0.6
SUPERSAMPLE = 4

Mode = Literal["train", "held_out", "all"]


@dataclass(frozen=True)
class Placement:
    """Rendering details that the record leaves free: exact centre and colour jitter."""

    cx: float  # in units of the resolution
    cy: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class CaptionedScene:
    scene: Scene
    placements: tuple[Placement, ...]
    caption: str
    mentions: tuple[Mention, ...]
    background_mentioned: bool
    template: str = ""  # the caption template drawn (`captions.TEMPLATES`), for per-form figures


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for item `index` of the stream with `seed` (independent of other items)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))


def _pair_allowed(colour: str, shape: str, mode: Mode) -> bool:
    held = (colour, shape) in HELD_OUT
    return mode == "all" or (mode == "train" and not held) or (mode == "held_out" and held)


def _overlaps(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Bounding-box test on (cx, cy, r): objects may not touch (`docs/shapes-world.md`)."""
    return abs(a[0] - b[0]) < a[2] + b[2] and abs(a[1] - b[1]) < a[2] + b[2]


def _place(obj: ShapeObject, rng: np.random.Generator) -> Placement:
    """Position jitter (up to 0.03 R) around the cell centre and per-channel colour jitter."""
    jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
    jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
    rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[obj.colour]) + jitter, 0, 255))
    return Placement(float(CELL_CENTRES[obj.cell % 3] + jx), float(CELL_CENTRES[obj.cell // 3] + jy), rgb)  # type: ignore[arg-type]


def sample_scene(
    rng: np.random.Generator, mode: Mode = "train", p_two: float = 1 - P_ONE_OBJECT
) -> tuple[Scene, tuple[Placement, ...]]:
    """Draw a scene and its placements.

    In "train" mode no object is a held-out colour-shape pair; in "held_out" mode the first
    object always is one (the second, if any, is an ordinary pair); "all" draws freely.
    Two-object scenes (a share `p_two`; the design's 0.4 by default) are redrawn until the
    objects' boxes do not overlap.
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    n = 2 if rng.random() < p_two else 1
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


def sample(
    seed: int, index: int, mode: Mode = "train", p_two: float = 1 - P_ONE_OBJECT, phrasing: Phrasing = "train"
) -> CaptionedScene:
    """Item `index` of the shapes stream `seed`: scene, placements and caption, deterministic.

    `phrasing="held_out"` words the caption with the templates and synonyms kept out of training
    (`shapesworld.captions`); training streams always use "train".
    """
    rng = scene_rng(seed, index)
    scene, placements = sample_scene(rng, mode, p_two)
    caption, mentions, bg, template = caption_scene_template(scene, rng, phrasing)
    return CaptionedScene(scene, placements, caption, mentions, bg, template)


# --- checking scenes against prompts ------------------------------------------------------


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
