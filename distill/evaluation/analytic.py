"""A second, independent judge of prompt adherence: a classical image reader written from the
shapes world's specification (`shapesworld`), with nothing learned.

Why a second judge: the learned evaluator (`distill.evaluation.evaluator`) is a CNN. When a model
is tuned to please it (preference tuning that ranks samples by its adherence, `distill.tune`), a
gain it reports may be the model finding the CNN's blind spots rather than drawing better
scenes. A judge that shares no weights, no training data and no failure modes with it checks
that a figure is real: a change both judges see is a change in the images.

How it reads an image (R x R, uint8), from the specification alone:
- background: the median colour of the outer ring of pixels, named by the nearest of the three
  background colours (objects sit inside the 3 x 3 grid and rarely reach the ring);
- objects: pixels farther than `FOREGROUND_DISTANCE` from the background colour, in 8-connected
  components (fewer than `MIN_PIXELS` pixels: noise); a component whose core holds two separate
  patches of object colour (two objects whose anti-aliased edges touch) is split between them;
- colour: the palette colour nearest to the median of the component's core pixels (those close
  to a palette colour: anti-aliased edges are blends with the background);
- coverage: each pixel's share of object colour, projected on the line from the background to the
  object colour, so anti-aliased edges count fractionally;
- position: the cell of the coverage-weighted centroid (the grid's cell boundaries at 3/8 and 5/8);
- size: the radius of the disc of equal coverage area, scaled per shape to the half-extent r the
  renderer used (a square's area is 3.24 r^2, a circle's pi r^2, a cross's 2.56 r^2, a triangle's
  2 r^2), against the midpoint of the small and large r;
- shape: nearest prototype in a space of scale-free moments of the coverage (second moment,
  vertical skew: a triangle's apex is up, four-fold anisotropy: a cross's mass lies on its axes,
  a square's in its corners), the prototypes computed from the renderer's own drawing of each
  shape and size at the image's resolution.

Its accuracy against the true scene record on rendered scenes is measured in
`tests/distill/evaluation/test_analytic.py`; on generated images both judges are reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
from scipy import ndimage

import shapesworld as shapes
from distill.evaluation.bootstrap import BOOTSTRAP_SEED, RESAMPLES, mean_resampled, percentile_interval, resample_counts
from distill.evaluation.evaluator import attribute_accuracy
from distill.evaluation.per_image import PerImage, _put, check_matrix
from shapesworld.world import CELL_CENTRES

FOREGROUND_DISTANCE = 48.0  # RGB distance from the background colour that makes a pixel foreground
MIN_PIXELS = 3  # smaller components are noise, not objects
# A pixel of an object's core: at least this share of a palette colour in its blend with the
# background (`_blend_names`; anti-aliased edges hold less).
CORE_PURITY = 0.75
MIN_SEED = 4  # core pixels of one colour, 4-connected, that make an object of their own
# Area of each shape over r^2, r the renderer's half-extent (`shapesworld.world.render`).
AREA_OVER_R2 = {"circle": np.pi, "square": 3.24, "triangle": 2.0, "cross": 2.56}
PALETTE = np.array(list(shapes.COLOURS.values()), dtype=np.float64)
COLOUR_NAMES = list(shapes.COLOURS)
BACKGROUND_PALETTE = np.array(list(shapes.BACKGROUNDS.values()), dtype=np.float64)
BACKGROUND_NAMES = list(shapes.BACKGROUNDS)


def _background(img: np.ndarray) -> tuple[str, np.ndarray]:
    ring = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]]).astype(np.float64)
    median = np.median(ring, axis=0)
    return BACKGROUND_NAMES[int(np.argmin(((BACKGROUND_PALETTE - median) ** 2).sum(1)))], median


def _nearest_colour(rgb: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for each row of (n, 3) `rgb`."""
    return ((rgb[:, None, :] - PALETTE[None]) ** 2).sum(-1).argmin(1)


def _blend_names(pix: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(palette index, share) of each row of (n, 3) `pix` read as a blend bg + a (c - bg) of the
    background and one palette colour c, a in [0, 1]: the colour whose blend line passes nearest.
    An anti-aliased edge pixel of a red object on white is then red at a share below one, not the
    pink it is nearest to."""
    axis = PALETTE - bg  # (8, 3)
    d = pix - bg
    a = np.clip(d @ axis.T / np.maximum((axis**2).sum(1), 1e-6), 0.0, 1.0)  # (n, 8)
    residual = ((d[:, None, :] - a[..., None] * axis[None]) ** 2).sum(-1)
    idx = residual.argmin(1)
    return idx, a[np.arange(len(pix)), idx]


def moments(coverage: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(area, scale-free shape features, centroid) of a coverage map: the second moment
    (mu20 + mu02) / A^2, the vertical skew mu03 / (A * s^3) with s = sqrt((mu20 + mu02) / A) (image y
    points down: a triangle with its apex up has its mass low, positive skew), and the four-fold
    anisotropy mu22 / (mu40 + 2 mu22 + mu04) (small for a cross, large for a square)."""
    area = float(coverage.sum())
    ys, xs = np.mgrid[0 : coverage.shape[0], 0 : coverage.shape[1]].astype(np.float64)
    cy, cx = float((coverage * ys).sum() / area), float((coverage * xs).sum() / area)
    dx, dy = xs - cx, ys - cy
    mu20, mu02 = float((coverage * dx**2).sum()), float((coverage * dy**2).sum())
    spread = (mu20 + mu02) / area
    mu03 = float((coverage * dy**3).sum())
    mu22, mu40, mu04 = (float((coverage * dx**2 * dy**2).sum()), float((coverage * dx**4).sum()),
                        float((coverage * dy**4).sum()))  # fmt: skip
    feats = np.array(
        [(mu20 + mu02) / area**2, mu03 / (area * spread**1.5 + 1e-12), mu22 / (mu40 + 2 * mu22 + mu04 + 1e-12)]
    )
    return area, feats, (cx, cy)  # type: ignore[return-value]


def _coverage(img: np.ndarray, mask: np.ndarray, bg: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Each pixel's share of `colour` against `bg` (projection on the line between them, in [0, 1])."""
    axis = colour - bg
    share = ((img.astype(np.float64) - bg) @ axis) / max(float(axis @ axis), 1e-6)
    return np.where(mask, np.clip(share, 0.0, 1.0), 0.0)


@cache
def prototypes(resolution: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """(shape names, features (n, 3), feature scale (3,)): each shape and size drawn by the renderer
    at this resolution at a few sub-pixel offsets around the centre cell (red on black: the
    coverage is exact there), one prototype per drawing; the scale is each feature's spread over
    them, so no feature dominates the distance."""
    names, feats = [], []
    for shape in shapes.SHAPES:
        for size in shapes.SIZES:
            for dx, dy in ((0.0, 0.0), (0.4, 0.2), (-0.3, 0.45), (0.2, -0.35)):
                pl = shapes.Placement(0.5 + dx / resolution, 0.5 + dy / resolution, shapes.COLOURS["red"])
                img = shapes.render(shapes.Scene("black", (shapes.ShapeObject("red", shape, size, 4),)), (pl,),
                                    resolution)  # fmt: skip
                bg = np.array(shapes.BACKGROUNDS["black"], np.float64)
                cov = _coverage(img, np.ones(img.shape[:2], bool), bg, np.array(shapes.COLOURS["red"], np.float64))
                names.append(shape)
                feats.append(moments(cov)[1])
    arr = np.array(feats)
    return tuple(names), arr, arr.std(0) + 1e-9


def _components(img: np.ndarray, bg: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(mask, palette index) of each object-like region. Foreground components first; within one,
    the core pixels (nearly pure object colour, `CORE_PURITY`) are named by their nearest palette colour and
    grouped into 4-connected patches of one colour; two or more patches of `MIN_SEED` pixels are two
    objects whose anti-aliased edges touch (same colour or not), and every pixel of the component
    goes to the nearest patch."""
    dist = np.sqrt(((img.astype(np.float64) - bg) ** 2).sum(-1))
    labels, n = ndimage.label(dist > FOREGROUND_DISTANCE, structure=np.ones((3, 3)))
    out = []
    for k in range(1, n + 1):
        mask = labels == k
        if mask.sum() < MIN_PIXELS:
            continue
        _, alpha = _blend_names(img[mask].astype(np.float64), bg)
        core = np.zeros_like(mask)
        core[mask] = alpha >= CORE_PURITY
        if not core.any():  # no pixel is mostly one palette colour: take the farthest from the background
            core = mask & (dist >= dist[mask].max())
        names = np.full(mask.shape, -1)
        names[core] = _blend_names(img[core].astype(np.float64), bg)[0]
        seeds, colours = np.zeros(mask.shape, int), []
        for c in np.unique(names[core]):
            patches, m = ndimage.label(names == c)
            for j in range(1, m + 1):
                if (patches == j).sum() >= MIN_SEED:
                    colours.append(int(c))
                    seeds[patches == j] = len(colours)
        if len(colours) <= 1:
            median = np.median(img[core].astype(np.float64), axis=0)
            out.append((mask, int(_nearest_colour(median[None])[0])))
            continue
        _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        owner = seeds[iy, ix]
        for j, c in enumerate(colours, start=1):
            sub = mask & (owner == j)
            if sub.sum() >= MIN_PIXELS:
                out.append((sub, c))
    return out


def _cell(cx: float, cy: float, resolution: int) -> int:
    edges = [(a + b) / 2 * resolution for a, b in pairwise(CELL_CENTRES)]
    col = int(np.searchsorted(edges, cx + 0.5))  # pixel centres sit at index + 0.5
    row = int(np.searchsorted(edges, cy + 0.5))
    return 3 * row + col


def read_scene(img: np.ndarray) -> shapes.Scene:
    """The scene record an (R, R, 3) uint8 image shows, read by the rules of the module docstring."""
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] != img.shape[1]:
        raise ValueError(f"read_scene: need an (R, R, 3) image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"read_scene: need uint8 pixels, got {img.dtype}")
    resolution = img.shape[0]
    background, bg = _background(img)
    names, protos, scale = prototypes(resolution)
    found = []
    for mask, colour_idx in _components(img, bg):
        cov = _coverage(img, mask, bg, PALETTE[colour_idx])
        if cov.sum() < 1.0:
            continue
        area, feats, (cx, cy) = moments(cov)
        shape = names[int((((protos - feats) / scale) ** 2).sum(1).argmin())]
        r = np.sqrt(area / AREA_OVER_R2[shape]) / resolution
        size = "small" if r < (shapes.SIZES["small"] + shapes.SIZES["large"]) / 2 else "large"
        found.append((area, shapes.ShapeObject(COLOUR_NAMES[colour_idx], shape, size, _cell(cx, cy, resolution))))
    found.sort(key=lambda a: -a[0])  # the largest first: stray blobs, if any, come last
    return shapes.Scene(background, tuple(o for _, o in found))


def read_scenes(images: Sequence[np.ndarray] | np.ndarray) -> list[shapes.Scene]:
    """`read_scene` of each image of an (n, R, R, 3) uint8 array."""
    return [read_scene(np.asarray(img)) for img in images]


def adherence_intervals(rec: PerImage, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """95% bootstrap intervals over images of every adherence figure of `rec` (the same groups and
    resamples as the evaluator's `PerImage.intervals`, without the feature distances)."""
    counts = resample_counts(rec.n, resamples, seed)
    out: dict[str, Any] = {}
    for path, mask, c in rec.adherence_groups():
        _put(out, path, percentile_interval(mean_resampled(counts, rec.checks[:, c], mask)) if mask.any() else None)
    return out


def second_judge(
    rec: PerImage, images: np.ndarray, ref: np.ndarray, items: Sequence[Any], resamples: int = RESAMPLES
) -> tuple[dict[str, Any], PerImage]:
    """The second judge's figures for a row and its per-image record.

    The record is the evaluator's (`rec`: same prompts, seeds, features, grain) with the analytic
    reader's checks in place of the evaluator's, so every tool that pairs sidecars
    (`distill.evaluation.compare`, the methods report) compares adherence by this judge unchanged.
    The figures: `adherence_analytic` (the same groups as `adherence`), its intervals, and
    `analytic_reader_accuracy`, the reader's per-attribute accuracy on this row's own renders
    (`distill.evaluation.evaluator.attribute_accuracy` against the true records)."""
    own = replace(rec, checks=check_matrix(read_scenes(images), items), meta={**rec.meta, "judge": "analytic"})
    truth = [e.item.scene for e in items]
    figures: dict[str, Any] = {
        "adherence_analytic": own.adherence(),
        "analytic_reader_accuracy": attribute_accuracy(read_scenes(ref), truth),
    }
    if resamples > 0:
        figures["adherence_analytic_ci"] = adherence_intervals(own, resamples)
    return figures, own
