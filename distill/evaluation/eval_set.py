"""The fixed evaluation prompt set (`docs/shapes-world.md`, "Evaluation on this world").

Three parts, fixed by `EVAL_SEED` and `EVAL_SET_VERSION` so every results row is comparable:

- in distribution (70%): training compositions in training phrasings, three quarters of them
  two-object scenes, so that at the default 2,000 images the two-object figure rests on 1,050
  prompts (a 95% interval of about +-0.03) and the one-object figure on 350;
- held-out compositions (10%): the first object is a colour-shape pair never trained on;
- held-out phrasings (20%): the first in-distribution scenes again, stating exactly the same
  attributes, worded with templates and synonyms kept out of training, and drawn with the same
  image seeds. Their adherence against the same scenes' training-phrasing adherence is a paired
  comparison of wording alone (`held_out_phrasing` against `held_out_phrasing_reference`).

Specs come from the scene records (`shapesworld.captions.spec_of`), not from parsing the captions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import shapesworld as shapes
from shapesworld import captions

EVAL_SEED = 31337
EVAL_SET_VERSION = 2
HELD_OUT_PAIR_SHARE = 0.1
HELD_OUT_PHRASING_SHARE = 0.2
P_TWO_IN_DISTRIBUTION = 0.75
P_TWO_HELD_OUT = 0.5

Group = Literal["train", "held_out_pair", "held_out_phrasing"]


@dataclass(frozen=True)
class EvalItem:
    item: shapes.CaptionedScene
    spec: shapes.PromptSpec
    held_out: bool  # a held-out colour-shape pair
    seed: int
    group: Group = "train"
    twin: int | None = None  # for a held-out phrasing: the index of the same scene in training phrasing


def eval_set(n: int) -> list[EvalItem]:
    """n fixed prompts: in-distribution first, then held-out pairs, then held-out phrasings."""
    n_pair = round(n * HELD_OUT_PAIR_SHARE)
    n_phr = round(n * HELD_OUT_PHRASING_SHARE)
    n_in = n - n_pair - n_phr
    n_phr = min(n_phr, n_in)
    out: list[EvalItem] = []
    for i in range(n_in):
        it = shapes.sample(EVAL_SEED, i, "train", P_TWO_IN_DISTRIBUTION)
        out.append(EvalItem(it, captions.spec_of(it.scene, it.mentions, it.background_mentioned), False, i))
    for i in range(n_pair):
        it = shapes.sample(EVAL_SEED + 1, i, "held_out", P_TWO_HELD_OUT)
        spec = captions.spec_of(it.scene, it.mentions, it.background_mentioned)
        out.append(EvalItem(it, spec, True, n_in + i, "held_out_pair"))
    for i in range(n_phr):
        twin = out[i]
        rng = shapes.scene_rng(EVAL_SEED + 2, i)
        text, mentions, bg, template = captions.caption_scene_template(
            twin.item.scene, rng, "held_out", twin.item.mentions, twin.item.background_mentioned
        )
        it = shapes.CaptionedScene(twin.item.scene, twin.item.placements, text, mentions, bg, template)
        out.append(EvalItem(it, twin.spec, False, twin.seed, "held_out_phrasing", i))
    return out
