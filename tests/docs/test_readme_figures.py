"""The README and BENCHMARKS.md are the front door: their figures must be the committed results'
current values, the models named the ones the Makefile serves, and the links must lead somewhere
(a stale README fails here, not in a reader's hands).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docs.figures import Figure, agrees, check, parse, select

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# the pages whose figures are marked (the front pages, and the rows of the models served)
QUOTING = ("README.md", "BENCHMARKS.md", "docs/results/models.md", "docs/results/distillation.md")


def _makefile_value(name: str) -> str:
    m = re.search(rf"^{name}\s*[:?]?=\s*(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"the Makefile sets no {name}"
    return m.group(1).strip()


@pytest.fixture(scope="module")
def figures() -> list[Figure]:
    return parse(README.read_text())


def test_the_readme_quotes_its_headline_figures_with_their_sources(figures: list[Figure]) -> None:
    # the models table alone has 8 figures a model; fewer means the markers were dropped
    assert len(figures) >= 25
    sources = {f.path for f in figures}
    assert {"results/students/mm-alt-k8.json", "results/students/pd-k4.json"} <= sources


@pytest.mark.parametrize("page", QUOTING)
def test_every_marked_figure_matches_its_results_file(page: str) -> None:
    marked = parse((ROOT / page).read_text())
    assert marked, f"{page} marks no figures"
    problems = [p for f in marked if (p := check(f, ROOT))]
    assert not problems, f"stale figures in {page}:\n" + "\n".join(problems)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_every_marked_figure_comes_from_a_committed_file() -> None:
    paths = sorted({f.path for page in QUOTING for f in parse((ROOT / page).read_text())})
    tracked = subprocess.run(["git", "ls-files", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(tracked.stdout.split()) == set(paths), "results files the README quotes must be committed"


def test_the_checker_catches_a_stale_figure(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"fd": 167.02, "ci": [148.7, 188.2], "rows": [{"k": "a", "v": 0.0607}]}')
    good = "FD 167<!-- fig: r.json#fd --> [149, 188]<!-- fig: r.json#ci -->"
    good += " at 61<!-- fig: r.json#rows[k=a].v *1000 --> ms"
    assert [check(f, tmp_path) for f in parse(good)] == [None, None, None]
    stale = "FD 152<!-- fig: r.json#fd --> [149, 190]<!-- fig: r.json#ci --> 0.1<!-- fig: r.json#missing -->"
    assert all(check(f, tmp_path) for f in parse(stale))
    with pytest.raises(ValueError, match="no number"):
        parse("FD is good<!-- fig: r.json#fd -->")


def test_rounding_and_selectors() -> None:
    assert agrees("+18.0", 17.952, 1) and agrees("-0.021", -0.02143, 1) and agrees("1.08", 1081344, 1e-6)
    assert not agrees("0.72", 0.7263, 1) and not agrees("167", 167.6, 1)
    doc = {"rows": [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]}
    assert select(doc, "rows[a=2].b") == "x" and select(doc, "rows[1].a") == 2
    with pytest.raises(LookupError):
        select(doc, "rows[b=x].a")


def test_the_models_named_are_the_models_served() -> None:
    text = README.read_text()
    students = _makefile_value("STUDENTS").split()
    default = _makefile_value("DEFAULT_MODEL")
    for model in [*students, "teacher"]:
        assert f"| `{model}`" in text, f"the models table lacks {model}"
    assert f"`{default}` (default)" in text
    named = set(re.findall(r"`((?:mm-alt|mm-param|pd|cd)[\w-]*-k\d+)`", text))
    assert named <= set(students), f"the README names models that are not served: {named - set(students)}"


def test_the_vocabulary_is_the_shapes_worlds() -> None:
    from shapesworld.captions import BACKGROUND_WORDS, CELL_WORDS, COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

    section = README.read_text().split("## What a prompt may say", 1)[1].split("\n## ", 1)[0]
    for table in (COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, CELL_WORDS, BACKGROUND_WORDS):
        for word in table:
            assert word in section, f"the README's vocabulary lacks {word!r}"
    # the synonyms it promises are ones the default model was measured to draw
    measured_file = ROOT / "shapesworld" / "measured_vocabulary.json"
    if measured_file.is_file():
        measured = json.loads(measured_file.read_text())
        drawn = {w for words in measured["models"][_makefile_value("DEFAULT_MODEL")].values() for w in words}
        promised = re.search(r"Some synonyms work too \(([^)]*)\)", " ".join(section.split()))
        assert promised, "the README's vocabulary names no synonyms"
        words = [w.strip() for w in promised.group(1).split(",") if w.strip() not in ("", "...")]
        assert words and set(words) <= drawn, f"synonyms the default model does not draw: {set(words) - drawn}"


def test_the_first_screen_has_the_first_request_vocabulary_and_settings() -> None:
    text = README.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    first = ["## The first request", "## What a prompt may say", "## The models served", "## Configuration"]
    assert headings[:4] == first
    assert len(text.splitlines()) <= 220, "the README is a front door, not a notebook"
    assert not re.search(r"\bissue \d+", text, re.I), "no issue numbers in user-facing docs"


@pytest.mark.parametrize("page", QUOTING)
def test_the_front_pages_link_to_files_that_exist(page: str) -> None:
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)", (ROOT / page).read_text())
    assert links

    def target(link: str) -> Path:  # plots are served from results/ (docs/hooks/figures.py)
        if "figures/" in link:
            return ROOT / "results" / link.split("figures/", 1)[1]
        return (ROOT / page).parent / link

    missing = [link for link in links if not target(link).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_the_configuration_tables_name_real_settings() -> None:
    from service.settings import ServiceSettings

    def settings_of(model: type, prefix: str = "FEWSTEP_") -> set[str]:
        out = set()
        for name, field in model.model_fields.items():
            nested = field.annotation if isinstance(field.annotation, type) else None
            if nested is not None and hasattr(nested, "model_fields"):
                out |= settings_of(nested, f"{prefix}{name.upper()}__")
            else:
                out.add(f"{prefix}{name.upper()}")
        return out

    known = settings_of(ServiceSettings)
    guide = ROOT / "docs/guides/configuration.md"
    for page in (README, guide):
        rows = [line for line in page.read_text().splitlines() if line.startswith("| `FEWSTEP_")]
        named = {v for row in rows for v in re.findall(r"`(FEWSTEP_[A-Z0-9_]+)`", row.split("|")[1])}
        assert named, f"{page.name} has no settings table"
        assert named <= known, f"{page.name} names settings that do not exist: {sorted(named - known)}"
    documented = set(re.findall(r"FEWSTEP_[A-Z0-9_]+", guide.read_text()))
    assert known <= documented, f"settings the configuration guide does not describe: {sorted(known - documented)}"
