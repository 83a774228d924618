"""What `fewstep eval` measured on each image, the figures and intervals computed from it, and its
sidecar file (`<row>.npz`, beside the row's JSON).

Why per image: a row's figures are means and distances over the prompt set, and both their
bootstrap intervals and a paired comparison of two models (`distill.evaluation.compare`) need the per-image
values behind them, resampled by image index. Keeping them (evaluator features of the generated
image and of its prompt's render, each adherence check, the grain) in a compact sidecar makes a
comparison of two rows seconds of numpy instead of minutes of sampling.

The sidecar also carries the prompts and seeds it was measured on, so two sidecars are compared
only when they describe the same prompts and noise (`check_paired`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import shapesworld as shapes
from distill.evaluation.bootstrap import (
    BOOTSTRAP_SEED,
    LEVEL,
    RESAMPLES,
    fd_resampled,
    kid_resampled,
    mean_resampled,
    percentile_interval,
    resample_counts,
    shifted_interval,
)
from distill.evaluation.metrics import high_frequency_energy

CHECK_KEYS = ("all", "count", "colour", "shape", "background", "size", "position")
# The background mask leaves this many pixels around each object's largest possible box: one for
# anti-aliasing, one for the Laplacian's 3x3 support.
MASK_MARGIN_PX = 2.0
SIDECAR_VERSION = 1
GROUPS = ("train", "held_out_pair", "held_out_phrasing")  # `distill.evaluation.eval_set`'s parts


class _Item(Protocol):  # distill.evaluation.eval_set.EvalItem (duck-typed: this module stays below the prompt set)
    item: shapes.CaptionedScene
    spec: shapes.PromptSpec
    held_out: bool
    seed: int
    group: str
    twin: int | None


def background_mask(scene: shapes.Scene, resolution: int) -> np.ndarray:
    """(R, R) bool: pixels no object of `scene` can reach (its largest box: half-extent r of its
    size, plus the position jitter, plus `MASK_MARGIN_PX`). On a rendered or well generated image
    these pixels are the flat background colour."""
    centres = (np.arange(resolution) + 0.5) / resolution  # pixel centres in units of R
    mask = np.ones((resolution, resolution), dtype=bool)
    for o in scene.objects:
        half = shapes.SIZES[o.size] + shapes.POSITION_JITTER + MASK_MARGIN_PX / resolution
        cx, cy = shapes.CELL_CENTRES[o.cell % 3], shapes.CELL_CENTRES[o.cell // 3]
        inside_x = np.abs(centres - cx) <= half
        inside_y = np.abs(centres - cy) <= half
        mask &= ~(inside_y[:, None] & inside_x[None, :])
    return mask


def grain(images: np.ndarray, scenes: Sequence[shapes.Scene]) -> np.ndarray:
    """Per-image grain (`metrics.high_frequency_energy`, in 8-bit levels) on the background that
    each image's (predicted) scene leaves free; NaN where objects leave too little of it."""
    if len(images) != len(scenes):
        raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
    if len(images) == 0:
        return np.zeros(0)
    masks = np.stack([background_mask(s, images.shape[1]) for s in scenes])
    return high_frequency_energy(images, masks)


def prompt_fields(items: Sequence[_Item]) -> dict[str, np.ndarray]:
    """What the adherence figures need to know about each prompt, as aligned arrays."""
    n = len(items)
    groups = [getattr(e, "group", "held_out_pair" if e.held_out else "train") for e in items]
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown eval-set groups {sorted(unknown)}; known: {GROUPS}")
    twin = np.zeros(n, dtype=bool)
    for e in items:
        if getattr(e, "twin", None) is not None:
            twin[e.twin] = True
    stated = [
        (
            e.spec.background is not None,
            any(o.size is not None for o in e.spec.objects),
            any(o.cell is not None for o in e.spec.objects),
        )
        for e in items
    ]
    return {
        "captions": np.array([e.item.caption for e in items], dtype=str).reshape(n),
        "seeds": np.array([e.seed for e in items], dtype=np.int64).reshape(n),
        "held_out": np.array([e.held_out for e in items], dtype=bool).reshape(n),
        "group": np.array(groups, dtype=str).reshape(n),
        "twin": twin,
        "n_objects": np.array([len(e.spec.objects) for e in items], dtype=np.int64).reshape(n),
        "stated": np.array(stated, dtype=bool).reshape(n, 3),
        "template": np.array([getattr(e.item, "template", "") for e in items], dtype=str).reshape(n),
    }


def form_of(n_objects: int, position: bool, size: bool) -> str:
    """The name of a prompt's form: how many objects, and whether it states a position and a size
    (e.g. "two_objects+position-size"), the breakdown that shows a form users write often and the
    models fail, which an average over the evaluation's mix can hide."""
    count = "one_object" if n_objects == 1 else "two_objects"
    return f"{count}{'+' if position else '-'}position{'+' if size else '-'}size"


def check_matrix(pred: Sequence[shapes.Scene], items: Sequence[_Item]) -> np.ndarray:
    """(n, len(CHECK_KEYS)) bool: `shapes.satisfies` of each predicted scene against its prompt."""
    checks = [shapes.satisfies(p, e.spec) for p, e in zip(pred, items, strict=True)]
    return np.array([[c[k] for k in CHECK_KEYS] for c in checks], dtype=bool).reshape(len(items), len(CHECK_KEYS))


def adherence_groups(f: Mapping[str, np.ndarray]) -> list[tuple[tuple[str, ...], np.ndarray, int]]:
    """(where in the `adherence` dict, which images, which check) for every adherence figure, from
    `prompt_fields`.

    Over in-distribution prompts: overall, one- and two-object, and per attribute over the prompts
    that state it (count, colour and shape are always stated); over two-object prompts per
    attribute; over held-out compositions, the conjunction; over held-out phrasings and over the
    same scenes in training phrasings (`held_out_phrasing_reference`), the conjunction."""
    ind = f["group"] == "train"
    two = ind & (f["n_objects"] == 2)
    stated = {
        "count": ind,
        "colour": ind,
        "shape": ind,
        "background": ind & f["stated"][:, 0],
        "size": ind & f["stated"][:, 1],
        "position": ind & f["stated"][:, 2],
    }
    col = {k: CHECK_KEYS.index(k) for k in CHECK_KEYS}
    groups = [
        (("overall",), ind, col["all"]),
        (("one_object",), ind & (f["n_objects"] == 1), col["all"]),
        (("two_objects",), two, col["all"]),
        (("held_out",), f["held_out"].copy(), col["all"]),
        (("held_out_phrasing",), f["group"] == "held_out_phrasing", col["all"]),
        (("held_out_phrasing_reference",), f["twin"].copy(), col["all"]),
    ]
    groups += [(("per_attribute", k), m, col[k]) for k, m in stated.items()]
    # Where two-object prompts fail: the count, or binding colour and shape to each object, or
    # placing them (scenes are matched to the prompt by the best assignment of its objects).
    groups += [(("two_objects_per_attribute", k), m & two, col[k]) for k, m in stated.items()]
    # By the prompt's form (objects x stated position x stated size) and by caption template, over
    # in-distribution prompts: the conjunction.
    for n_obj in (1, 2):
        for pos in (True, False):
            for size in (True, False):
                m = ind & (f["n_objects"] == n_obj) & (f["stated"][:, 2] == pos) & (f["stated"][:, 1] == size)
                groups.append((("by_form", form_of(n_obj, pos, size)), m, col["all"]))
    templates = f.get("template")
    if templates is not None:
        for t in sorted({str(t) for t in templates[ind] if str(t)}):
            groups.append((("by_template", t), ind & (templates == t), col["all"]))
    return groups


def adherence_shares(f: Mapping[str, np.ndarray], checks: np.ndarray) -> dict[str, Any]:
    """The adherence shares (None for a group with no prompts), nested as in a results row."""
    out: dict[str, Any] = {}
    for path, mask, c in adherence_groups(f):
        _put(out, path, float(checks[mask, c].mean()) if mask.any() else None)
    return out


@dataclass
class PerImage:
    """Per-image measurements of one evaluated row (arrays aligned by prompt index)."""

    captions: np.ndarray  # (n,) str
    seeds: np.ndarray  # (n,) int64
    held_out: np.ndarray  # (n,) bool: the prompt holds a held-out colour-shape pair
    group: np.ndarray  # (n,) str: the prompt's part of the eval set (GROUPS)
    twin: np.ndarray  # (n,) bool: a training-phrasing prompt whose scene a held-out phrasing repeats
    n_objects: np.ndarray  # (n,) int: objects the prompt names
    stated: np.ndarray  # (n, 3) bool: the prompt states the background, a size, a position
    checks: np.ndarray  # (n, len(CHECK_KEYS)) bool: `shapes.satisfies` of the predicted scene
    features: np.ndarray  # (n, D) float32 evaluator features of the generated images
    ref_features: np.ndarray  # (n, D) float32 of the renders of the prompts' scenes
    grain: np.ndarray  # (n,) float: generated images' grain (NaN: no background to measure)
    grain_reference: np.ndarray  # (n,) float: the renders'
    meta: dict[str, Any] = field(default_factory=dict)
    template: np.ndarray | None = None  # (n,) str: each caption's template (None: a sidecar from before)

    @property
    def n(self) -> int:
        return len(self.captions)

    @classmethod
    def build(
        cls,
        items: Sequence[_Item],
        pred: Sequence[shapes.Scene],
        ref_pred: Sequence[shapes.Scene],
        features: np.ndarray,
        ref_features: np.ndarray,
        images: np.ndarray,
        ref_images: np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> PerImage:
        n = len(items)
        for name, arr in (("pred", pred), ("ref_pred", ref_pred), ("features", features),
                          ("ref_features", ref_features), ("images", images), ("ref_images", ref_images)):  # fmt: skip
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries for {n} prompts")
        return cls(
            **prompt_fields(items),
            checks=check_matrix(pred, items),
            # The evaluator computes in float32: keeping float32 loses nothing.
            features=np.asarray(features, dtype=np.float32),
            ref_features=np.asarray(ref_features, dtype=np.float32),
            grain=grain(images, pred),
            grain_reference=grain(ref_images, ref_pred),
            meta=dict(meta or {}),
        )

    # -- the figures ------------------------------------------------------------------------

    def adherence_groups(self) -> list[tuple[tuple[str, ...], np.ndarray, int]]:
        return adherence_groups(vars(self))

    def adherence(self) -> dict[str, Any]:
        """The adherence shares (None for a group with no prompts), nested as in a results row."""
        return adherence_shares(vars(self), self.checks)

    def kid_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Features scaled as `distill.evaluation.evaluate.score` scales them for KID: centred on the reference
        mean, divided by the reference's overall standard deviation."""
        ref = self.ref_features.astype(np.float64)
        mu, sd = ref.mean(0), float(ref.std()) + 1e-12
        return (ref - mu) / sd, (self.features.astype(np.float64) - mu) / sd

    def intervals(self, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
        """95% bootstrap intervals over images for FD, KID, grain and every adherence figure, plus
        the grain means themselves; keys meant to sit beside the row's figures."""
        counts = resample_counts(self.n, resamples, seed)
        ref = self.ref_features.astype(np.float64)
        gen = self.features.astype(np.float64)
        (fd_values,) = fd_resampled(counts, ref, gen)
        fd = float(fd_resampled(np.ones((1, self.n)), ref, gen)[0][0])
        kid_ref, kid_gen = self.kid_features()
        (kid,), (kid_values,) = kid_resampled(counts, kid_ref, kid_gen)
        adherence_ci: dict[str, Any] = {}
        for path, mask, c in self.adherence_groups():
            values = mean_resampled(counts, self.checks[:, c], mask)
            _put(adherence_ci, path, percentile_interval(values) if mask.any() else None)
        return {
            "fd_ci": shifted_interval(fd_values, fd),
            "kid_ci": shifted_interval(kid_values, kid),
            "adherence_ci": adherence_ci,
            "grain": _nanmean(self.grain),
            "grain_ci": percentile_interval(mean_resampled(counts, self.grain)),
            "grain_reference": _nanmean(self.grain_reference),
            "grain_reference_ci": percentile_interval(mean_resampled(counts, self.grain_reference)),
            "bootstrap": {
                "resamples": resamples,
                "seed": seed,
                "level": LEVEL,
                "over": "images (generated and reference features of a prompt resampled together)",
                "interval": "percentile; FD and KID (its all-images estimate) shifted by the bootstrap bias estimate",
            },
        }

    # -- the sidecar ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:  # a file object: savez would otherwise append ".npz" to odd names
            np.savez_compressed(
                f,
                version=np.array(SIDECAR_VERSION),
                captions=self.captions,
                seeds=self.seeds,
                held_out=self.held_out,
                group=self.group,
                twin=self.twin,
                n_objects=self.n_objects.astype(np.int8),
                stated=self.stated,
                checks=self.checks,
                check_keys=np.array(CHECK_KEYS, dtype=str),
                # float16 on disk halves the sidecar (2,000 images: about 2 MB in all); the rounding
                # (relative 5e-4) moves FD by about 1e-3 of its bootstrap spread.
                features=self.features.astype(np.float16),
                ref_features=self.ref_features.astype(np.float16),
                grain=self.grain.astype(np.float32),
                grain_reference=self.grain_reference.astype(np.float32),
                meta=np.array(json.dumps(self.meta)),
                **({} if self.template is None else {"template": self.template}),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> PerImage:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no per-image sidecar at {path} (re-run `fewstep eval` to write one)")
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"]) if "version" in z else None
            if version != SIDECAR_VERSION:
                raise ValueError(f"{path}: sidecar version {version}, this code reads {SIDECAR_VERSION}")
            if tuple(str(k) for k in z["check_keys"]) != CHECK_KEYS:
                raise ValueError(f"{path}: checks {list(z['check_keys'])}, expected {list(CHECK_KEYS)}")
            return cls(
                captions=z["captions"],
                seeds=z["seeds"].astype(np.int64),
                held_out=z["held_out"].astype(bool),
                group=z["group"],
                twin=z["twin"].astype(bool),
                n_objects=z["n_objects"].astype(np.int64),
                stated=z["stated"].astype(bool),
                checks=z["checks"].astype(bool),
                features=z["features"].astype(np.float32),
                ref_features=z["ref_features"].astype(np.float32),
                grain=z["grain"].astype(np.float64),
                grain_reference=z["grain_reference"].astype(np.float64),
                meta=json.loads(str(z["meta"])),
                template=z["template"] if "template" in z else None,
            )


def check_paired(a: PerImage, b: PerImage, names: tuple[str, str] = ("A", "B")) -> None:
    """Raise ValueError unless `a` and `b` were measured on the same prompts, seeds, eval seed,
    image count and evaluator: only then are their images pairs and a paired bootstrap valid."""
    na, nb = names
    if a.n != b.n:
        raise ValueError(f"{na} has {a.n} images and {nb} {b.n}: a paired comparison needs the same prompt set")
    for key in ("eval_seed", "eval_set_version", "evaluator_sha256", "resolution"):
        va, vb = a.meta.get(key), b.meta.get(key)
        if va != vb:
            raise ValueError(f"{na} and {nb} differ in {key} ({va!r} vs {vb!r}): not the same measurement")
    if not np.array_equal(a.captions, b.captions):
        i = int(np.argmax(a.captions != b.captions))
        raise ValueError(f"{na} and {nb} differ in prompt {i}: {a.captions[i]!r} vs {b.captions[i]!r}")
    if not np.array_equal(a.seeds, b.seeds):
        i = int(np.argmax(a.seeds != b.seeds))
        raise ValueError(f"{na} and {nb} differ in the seed of image {i}: {a.seeds[i]} vs {b.seeds[i]}")
    if not np.allclose(a.ref_features, b.ref_features, rtol=1e-3, atol=1e-3):
        raise ValueError(f"{na} and {nb} have different reference features (another evaluator or renderer)")


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None
