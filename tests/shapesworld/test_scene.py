"""The shapes world's vocabulary and scene record (shapesworld.scene)."""

from __future__ import annotations

import json

from shapesworld.scene import BACKGROUNDS, CELLS, COLOURS, HELD_OUT, SHAPES, SIZES, Scene, ShapeObject


def test_a_scene_survives_a_json_round_trip():
    scene = Scene("gray", (ShapeObject("red", "circle", "small", 0), ShapeObject("blue", "cross", "large", 8)))
    back = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert back == scene and isinstance(back.objects, tuple)
    assert scene.to_dict()["objects"][1] == {"colour": "blue", "shape": "cross", "size": "large", "cell": 8}


def test_the_vocabulary_is_consistent():
    assert len(CELLS) == 9 and len(set(CELLS)) == 9
    assert all((c, s) in {(c2, s2) for c2 in COLOURS for s2 in SHAPES} for c, s in HELD_OUT)
    assert len({c for c, _ in HELD_OUT}) == len(HELD_OUT) == len({s for _, s in HELD_OUT})  # one per shape
    assert all(0 < r < 0.5 for r in SIZES.values())
    assert all(all(0 <= v <= 255 for v in rgb) for rgb in [*BACKGROUNDS.values(), *COLOURS.values()])
    assert len(set(BACKGROUNDS.values()) | set(COLOURS.values())) == len(BACKGROUNDS) + len(COLOURS)
