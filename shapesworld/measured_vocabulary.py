"""The words the served models really draw: the measured vocabulary (`results/vocabulary/`).

`shapesworld.captions` knows every word of both phrasing sets (it must, to read prompts back and
to word the held-out evaluation), but knowing a word is not drawing it: the denoisers never saw the
held-out synonyms, and the measurement (`python -m scripts.vocabulary`) found that the default
student draws no held-out colour word (crimson, cobalt, ...: adherence about 0 against 0.6-0.9 for
the canonical word) and the held-out shape words at 0.3-0.7x, while it draws most held-out position
and size words and every training synonym as well as the canonical word. So what the service
advertises (`GET /info`) and what it warns about are the *listed* words: every canonical word, and
each other word the model draws at >= `THRESHOLD` times the adherence of its canonical word on the
same scenes and seeds; a word left unmeasured for a model is not listed for it.

The listing is a committed data file beside this module (`measured_vocabulary.json`, written by the
measurement with the full figures in `results/vocabulary/vocabulary.json`), read once at first use:
nothing here is a hard-coded list. A model the file does not name gets the words every measured
model draws (the intersection), which is conservative: a new bundle advertises only what all the
measured ones managed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from shapesworld.captions import BACKGROUND_WORDS, CELL_WORDS, COLOUR_WORDS, FILLER, SHAPE_WORDS, SIZE_WORDS

THRESHOLD = 0.85
VOCABULARY_FILE = Path(__file__).with_name("measured_vocabulary.json")

# Category -> (value -> (training words, held-out words)), in `captions.vocabulary()`'s order.
TABLES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "colours": COLOUR_WORDS,
    "shapes": SHAPE_WORDS,
    "sizes": SIZE_WORDS,
    "positions": CELL_WORDS,
    "backgrounds": BACKGROUND_WORDS,
}
# Words people add that carry no constraint ("a red coloured circle" is in FILLER already).
_OTHER = frozenset({"colour", "color"})


@dataclass(frozen=True)
class Word:
    """One word a prompt may use for `value` of `category`, and the canonical word it stands for."""

    category: str
    value: str
    word: str
    canonical: str
    phrasing: str  # "train" (seen in training captions) or "held_out"


def alternatives() -> list[Word]:
    """Every non-canonical word of every value (the ones the measurement compares), in table order."""
    out = []
    for category, table in TABLES.items():
        for value, (train, held) in table.items():
            canonical = train[0]
            out += [Word(category, value, w, canonical, "train") for w in train[1:]]
            out += [Word(category, value, w, canonical, "held_out") for w in held]
    return out


def canonical_words() -> dict[str, list[str]]:
    """The canonical (first training) word of every value, by category: always listed."""
    return {c: [train[0] for train, _ in table.values()] for c, table in TABLES.items()}


def canonical_of(word: str) -> str | None:
    """The canonical word `word` stands for ('crimson' -> 'red'), None for a word of no value."""
    key = word.lower()
    for table in TABLES.values():
        for train, held in table.values():
            if key in (*train, *held):
                return train[0]
    return None


class VocabularyError(ValueError):
    """The measured vocabulary file is missing or malformed."""


@dataclass(frozen=True)
class MeasuredVocabulary:
    """Per model, the listed words by category (canonical words first), as measured."""

    threshold: float
    default_model: str | None
    models: dict[str, dict[str, list[str]]]

    def listed(self, model: str | None = None) -> dict[str, list[str]]:
        """The words `model` draws (the file's default model when None); the intersection over the
        measured models for a model the file does not name."""
        name = model or self.default_model
        if name in self.models:
            return {c: list(ws) for c, ws in self.models[name].items()}
        if not self.models:
            return canonical_words()
        return {
            c: [w for w in words if all(w in m.get(c, []) for m in self.models.values())]
            for c, words in next(iter(self.models.values())).items()
        }


def parse_measured(data: Mapping) -> MeasuredVocabulary:
    """Check and read the listing's JSON (a clear error naming what is wrong)."""
    try:
        threshold = float(data["threshold"])
        models = data["models"]
    except (KeyError, TypeError, ValueError) as e:
        raise VocabularyError(f"measured vocabulary: needs 'threshold' and 'models' ({e!r})") from e
    known = {c: {w for train, held in t.values() for w in (*train, *held)} for c, t in TABLES.items()}
    out: dict[str, dict[str, list[str]]] = {}
    for name, cats in models.items():
        if set(cats) != set(TABLES):
            raise VocabularyError(
                f"measured vocabulary: model {name!r} has categories {sorted(cats)}, not {sorted(TABLES)}"
            )
        for c, words in cats.items():
            stray = [w for w in words if w not in known[c]]
            if stray:
                raise VocabularyError(
                    f"measured vocabulary: {name!r} lists {stray} under {c}, not words of that category"
                )
            missing = [w for w in canonical_words()[c] if w not in words]
            if missing:
                raise VocabularyError(f"measured vocabulary: {name!r} leaves canonical words {missing} out of {c}")
        out[name] = {c: list(cats[c]) for c in TABLES}
    return MeasuredVocabulary(threshold, data.get("default_model"), out)


def load_measured(path: str | Path = VOCABULARY_FILE) -> MeasuredVocabulary:
    path = Path(path)
    if not path.is_file():
        raise VocabularyError(f"no measured vocabulary at {path} (run `python -m scripts.vocabulary`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VocabularyError(f"{path}: not JSON ({e})") from e
    return parse_measured(data)


@cache
def measured() -> MeasuredVocabulary:
    """The committed listing, read once."""
    return load_measured()


def listed_vocabulary(model: str | None = None) -> dict[str, list[str]]:
    """The words `model` draws, by category (`GET /info`'s `vocabulary`)."""
    return measured().listed(model)


def _phrase_re(phrases: Sequence[str]) -> re.Pattern[str]:
    ordered = sorted(set(phrases), key=lambda p: -len(p))
    return re.compile(r"(?<![a-z])(" + "|".join(re.escape(p) for p in ordered) + r")(?![a-z])")


_ALL_PHRASES = [w for t in TABLES.values() for train, held in t.values() for w in (*train, *held)]
_ALL_RE = _phrase_re(_ALL_PHRASES)


def unlisted_words(prompt: str, listed: Mapping[str, Sequence[str]]) -> list[str]:
    """Words and phrases of `prompt` that are not in `listed`, in order, each once.

    A vocabulary phrase the model does not draw ('crimson', 'round dot') is named whole; any other
    word outside the vocabulary and the template words is named alone. Matching is on whole
    phrases, longest first, case and punctuation ignored ('Top-Left' is the phrase 'top-left').
    """
    text = re.sub(r"\s+", " ", prompt.lower())
    allowed = {w for words in listed.values() for w in words}
    seen: dict[str, None] = {}
    rest = []
    pos = 0
    for m in _ALL_RE.finditer(text):
        rest.append(text[pos : m.start()])
        pos = m.end()
        if m.group(1) not in allowed:
            seen.setdefault(m.group(1), None)
    rest.append(text[pos:])
    for w in re.findall(r"[a-z]+", " ".join(rest)):
        if w not in FILLER and w not in _OTHER:
            seen.setdefault(w, None)  # includes a piece of a phrase alone ('dot', 'upper'): never shown
    return list(seen)
