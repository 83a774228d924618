"""Quality per prompt class, as the bundles measured it: what the latency controller gives up.

Each bundle's manifest carries its evaluation rows (`fewstep eval`: adherence over the 2,000
prompts of the evaluation set, overall and per class, with 95% bootstrap intervals). A row names
its step count and guidance; `quality_rows` keeps, per step count, the row at the model's default
guidance (else the first row of that step count), as {prompt class: adherence}. A step count
without a row has no known quality: the controller never downgrades to it (`service.engine.router`).

`prompt_class` reads a prompt with the shapes world's parser: `one_object`, `two_objects`, or
`overall` for a prompt it cannot read (its unknown words draw noise anyway). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

import shapesworld as shapes
from fewstep.bundle import Manifest
from service.engine.slo import OVERALL

CLASSES = ("one_object", "two_objects")  # the evaluation rows' adherence keys the controller uses


def prompt_class(prompt: str) -> str:
    """`one_object`, `two_objects`, or `overall` (a prompt the shapes-world parser cannot read)."""
    try:
        objects = len(shapes.parse_prompt(prompt).objects)
    except ValueError:
        return OVERALL
    return {1: "one_object", 2: "two_objects"}.get(objects, OVERALL)


def _classes(row: dict[str, Any], key: str) -> dict[str, Any]:
    values = row.get(key)
    if not isinstance(values, dict):
        return {}
    return {c: values[c] for c in (*CLASSES, OVERALL) if values.get(c) is not None}


def quality_rows(manifest: Manifest) -> dict[int, dict[str, float]]:
    """{step count: {prompt class: adherence}} from the manifest's evaluation rows."""
    return {k: {c: float(v) for c, v in _classes(row, "adherence").items()} for k, row in _rows(manifest).items()}


def quality_intervals(manifest: Manifest) -> dict[int, dict[str, tuple[float, float]]]:
    """{step count: {prompt class: (low, high)}}: the rows' 95% intervals (reports, benchmarks)."""
    out: dict[int, dict[str, tuple[float, float]]] = {}
    for k, row in _rows(manifest).items():
        out[k] = {c: (float(v[0]), float(v[1])) for c, v in _classes(row, "adherence_ci").items() if len(v) == 2}
    return out


def _rows(manifest: Manifest) -> dict[int, dict[str, Any]]:
    """Per step count, the evaluation row at the default guidance (else the first of that count)."""
    chosen: dict[int, dict[str, Any]] = {}
    default = manifest.guidance.default
    for row in manifest.evaluation.values():
        if not isinstance(row, dict) or not isinstance(row.get("adherence"), dict):
            continue
        try:
            steps = int(row["steps"])
        except (KeyError, TypeError, ValueError):
            continue
        if steps not in manifest.steps:
            continue
        at_default = row.get("guidance") == default
        if steps not in chosen or (at_default and chosen[steps].get("guidance") != default):
            chosen[steps] = row
    return chosen
