"""The shapes world's vocabulary and scene record (`docs/shapes-world.md`, "Scene").

The values every other part reads (colours, shapes, sizes, cells, backgrounds, held-out pairs)
and the record an image is described by. Kept apart from rendering (`shapesworld.world`, PIL) and
captions (`shapesworld.captions`) so that each can import it without the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
HELD_OUT = frozenset({("pink", "triangle"), ("cyan", "cross"), ("orange", "square"), ("purple", "circle")})


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
