"""The shapes world: procedurally rendered, captioned scenes (`docs/shapes-world.md`).

A package of its own, between the core and both sides: training renders it, evaluation parses
prompts with it, the service reads its vocabulary (it warns about the words of a prompt outside
it) and the load benchmarks draw prompts from it. It needs numpy and Pillow and imports no other
package of this project (the import contracts would allow it the core, and nothing above).

    shapesworld.scene    the vocabulary and the scene record
    shapesworld.captions captions in the many ways people write them, and reading prompts back
    shapesworld.world    sampling scenes, rendering them, checking a scene against a prompt
    shapesworld.measured_vocabulary
                         the words the models are measured to draw (what the service lists and
                         warns by: `shapes.listed_vocabulary`, `shapes.unlisted_words`)

`import shapesworld as shapes` (as callers write it) gives all three under one name: `shapes.sample`,
`shapes.render`, `shapes.parse_prompt`, `shapes.vocabulary`, `shapes.unknown_words`, ...
"""

from shapesworld.measured_vocabulary import canonical_of, canonical_words, listed_vocabulary, unlisted_words
from shapesworld.world import (
    BACKGROUNDS,
    CELL_CENTRES,
    CELLS,
    COLOUR_JITTER,
    COLOURS,
    EXAMPLE_PROMPTS,
    HELD_OUT,
    P_ONE_OBJECT,
    POSITION_JITTER,
    SHAPES,
    SIZES,
    SUPERSAMPLE,
    CaptionedScene,
    Mention,
    Mode,
    ObjectSpec,
    Phrasing,
    Placement,
    PromptSpec,
    Scene,
    ShapeObject,
    caption_scene,
    parse_prompt,
    render,
    replace,
    sample,
    sample_scene,
    satisfies,
    scene_rng,
    spec_of,
    unknown_words,
    vocabulary,
)

__all__ = [
    "BACKGROUNDS", "CELLS", "CELL_CENTRES", "COLOURS", "COLOUR_JITTER", "EXAMPLE_PROMPTS", "HELD_OUT",
    "POSITION_JITTER", "P_ONE_OBJECT", "SHAPES", "SIZES", "SUPERSAMPLE",
    "CaptionedScene", "Mention", "Mode", "ObjectSpec", "Phrasing", "Placement", "PromptSpec", "Scene", "ShapeObject",
    "canonical_of", "canonical_words", "caption_scene", "listed_vocabulary", "parse_prompt", "render", "replace",
    "sample", "sample_scene", "satisfies", "scene_rng", "spec_of", "unknown_words", "unlisted_words", "vocabulary",
]  # fmt: skip
