"""The README's machine-readable figures: `<!-- fig: PATH#SELECTOR [*SCALE] -->` after a number.

A figure is the number (or the `[low, high]` interval) written right before the comment; the
comment names the committed results file it was read from, the value's path inside it and an
optional scale (`*1000` for seconds shown as ms). Selectors are dotted keys, `[3]` list indices and
`[key=value,...]` list filters (`rows[path=openvino-bf16,batch=16].images_per_s`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = re.compile(r"<!--\s*fig:\s*(?P<path>[^#\s]+)#(?P<selector>\S+)(?:\s+\*(?P<scale>[0-9.e+-]+))?\s*-->")
NUMBER = r"[+-]?\d[\d,]*(?:\.\d+)?"
SHOWN_INTERVAL = re.compile(rf"\[\s*(?P<low>{NUMBER})\s*,\s*(?P<high>{NUMBER})\s*\]\s*$")
SHOWN_NUMBER = re.compile(rf"(?P<value>{NUMBER})(?:[kMx%])?\s*$")
_TOKEN = re.compile(r"([^.\[\]]+)|\[([^\]]+)\]")


@dataclass(frozen=True)
class Figure:
    line: int
    shown: tuple[str, ...]  # one number, or an interval's two
    path: str
    selector: str
    scale: float

    def where(self) -> str:
        return f"README line {self.line}: {' / '.join(self.shown)} <- {self.path}#{self.selector}"


def parse(text: str) -> list[Figure]:
    """Every marked figure of `text`; a marker with no number right before it is an error."""
    figures = []
    for m in MARKER.finditer(text):
        before = text[: m.start()]
        line = before.count("\n") + 1
        tail = before[before.rfind("\n") + 1 :]
        tail = MARKER.sub("", tail) if MARKER.search(tail) else tail
        scale = float(m["scale"]) if m["scale"] else 1.0
        if interval := SHOWN_INTERVAL.search(tail):
            shown: tuple[str, ...] = (interval["low"], interval["high"])
        elif number := SHOWN_NUMBER.search(tail):
            shown = (number["value"],)
        else:
            raise ValueError(f"README line {line}: no number right before the marker {m.group(0)}")
        figures.append(Figure(line, shown, m["path"], m["selector"], scale))
    return figures


def select(doc: Any, selector: str) -> Any:
    """The value at `selector` in a loaded JSON document (KeyError/IndexError/LookupError if absent)."""
    value = doc
    for key, bracket in _TOKEN.findall(selector):
        if key:
            value = value[key]
        elif bracket.lstrip("-").isdigit():
            value = value[int(bracket)]
        else:
            wanted = dict(part.split("=", 1) for part in bracket.split(","))
            matches = [row for row in value if all(str(row.get(k)) == v for k, v in wanted.items())]
            if len(matches) != 1:
                raise LookupError(f"[{bracket}] matches {len(matches)} rows, not one")
            value = matches[0]
    return value


def agrees(shown: str, value: float, scale: float) -> bool:
    """Whether `shown` is `value * scale` written to the decimals `shown` has."""
    digits = shown.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return abs(float(digits) - value * scale) <= 0.5 * 10**-decimals + 1e-9


def check(figure: Figure, root: Path) -> str | None:
    """None when the figure agrees with its results file, else what is wrong."""
    source = root / figure.path
    if not source.is_file():
        return f"{figure.where()}: no such results file"
    try:
        value = select(json.loads(source.read_text()), figure.selector)
    except (KeyError, IndexError, LookupError, TypeError) as e:
        return f"{figure.where()}: the selector finds nothing ({e!r})"
    values = list(value) if isinstance(value, list) else [value]
    if len(values) != len(figure.shown):
        return f"{figure.where()}: shows {len(figure.shown)} numbers, the file has {len(values)}"
    for shown, v in zip(figure.shown, values, strict=True):
        if not isinstance(v, int | float) or not agrees(shown, float(v), figure.scale):
            return f"{figure.where()}: the file says {v!r} (x {figure.scale:g})"
    return None
