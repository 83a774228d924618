"""Static checks of the Dockerfiles and the build context (no Docker daemon needed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.defaults import default_model

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "deploy/prometheus/Dockerfile"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in instructions(path):
        if word == "FROM":
            parts = rest.split()
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"stage{len(result)}"
            result[current] = []
        if current is not None:
            result[current].append((word, rest))
    return result


def arg_defaults(path: Path) -> dict[str, str]:
    return {k: v for word, rest in instructions(path) if word == "ARG" and "=" in rest for k, v in [rest.split("=", 1)]}


def runtime_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    all_stages = stages(path)
    if path.name == "Dockerfile" and path.parent == ROOT:
        return {name: all_stages[name] for name in ("cpu", "gpu")}
    return {name: body for name, body in all_stages.items()}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_stages_run_as_non_root_with_exec_form_and_healthcheck(path):
    for name, body in runtime_stages(path).items():
        users = [rest for word, rest in body if word == "USER"]
        assert users, f"{name}: no USER"
        assert users[-1].split(":")[0] not in ("root", "0"), f"{name}: runs as {users[-1]}"
        for word in ("ENTRYPOINT", "CMD"):
            for word_, rest in body:
                if word_ == word:
                    assert isinstance(json.loads(rest), list), f"{name}: {word} is not exec form"
        if path.parent == ROOT:
            checks = [rest for word, rest in body if word == "HEALTHCHECK"]
            assert checks, f"{name}: no HEALTHCHECK"
            cmd = checks[-1].split(" CMD ", 1)[1]
            assert isinstance(json.loads(cmd), list), f"{name}: HEALTHCHECK is not exec form"
            assert "/readyz" in cmd


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_base_image_and_package_is_pinned(path):
    defaults = arg_defaults(path)
    for word, rest in instructions(path):
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), image)
        if image in stages(path):  # FROM another stage
            continue
        assert ":" in image and not image.endswith(":latest"), f"{path.name}: unpinned base {image}"
        assert re.search(r":[\w.-]*\d", image), f"{path.name}: base {image} has no version in its tag"
    assert "latest" not in path.read_text().replace("# ", "")
    for name, value in defaults.items():
        if name.endswith("_VERSION"):
            assert re.fullmatch(r"[\w.+~-]*\d[\w.+~-]*", value), f"{name}={value} is not a version"


def test_cpu_image_never_installs_torch_and_gpu_stage_comes_last():
    all_stages = stages(ROOT / "Dockerfile")
    # The classic builder builds every stage before the target: the CUDA stage must come last.
    assert list(all_stages)[-1] == "gpu"
    cpu = all_stages["cpu"]
    copies = [rest for word, rest in cpu if word == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    assert any(c.startswith("--from=bundles /bundles") for c in copies)
    assert not [rest for word, rest in cpu if word == "RUN" and "pip" in rest], "the cpu stage installs nothing itself"
    builder = " ".join(rest for word, rest in all_stages["builder"] if word == "RUN")
    assert "torch" not in builder and "--require-hashes --no-deps" in builder and "/tmp/serve.lock" in builder
    copies = [rest for word, rest in all_stages["builder"] if word == "COPY"]
    assert "requirements/serve.lock /tmp/serve.lock" in copies
    # the lock itself (pinned, hashed, torch-free) is checked by tests/test_locks.py


def test_dockerignore_keeps_runs_venvs_and_caches_out():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "an allowlist: everything is ignored unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for never in (".venv", "runs", ".git", "bundles", ".cache", "build"):
        assert never not in allowed
    # everything the Dockerfile copies from the context is allowed in
    for word, rest in instructions(ROOT / "Dockerfile"):
        if word == "COPY" and not rest.startswith("--from"):
            for src in rest.split()[:-1]:
                src = src.rstrip("/")
                assert any(src == a or src.startswith(a + "/") or a.startswith(src + "/") for a in allowed), src


def test_entrypoint_is_executable_and_execs_the_server():
    entry = ROOT / "deploy/entrypoint.sh"
    assert entry.stat().st_mode & 0o111
    text = entry.read_text()
    assert text.startswith("#!/bin/sh") and "exec fewstep serve" in text


def test_images_ship_the_makefiles_students_and_default_model():
    make = re.search(r"^STUDENTS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert make, "Makefile: no STUDENTS list"
    students = make.group(1).split()
    assert arg_defaults(ROOT / "Dockerfile")["STUDENTS"].strip('"').split() == students
    for name in students:
        assert (ROOT / "models/students" / name / "model.safetensors").is_file(), name
        assert (ROOT / "results/students" / f"{name}.json").is_file(), name
    for name, body in runtime_stages(ROOT / "Dockerfile").items():
        env = " ".join(rest for word, rest in body if word == "ENV")
        assert f"FEWSTEP_DEFAULT_MODEL={default_model()} " in env + " ", f"{name}: not the Makefile's DEFAULT_MODEL"


def test_the_cpu_image_and_make_serve_pick_the_fastest_backend_at_start_up():
    """The CPU image serves `kind=auto` (OpenVINO bf16 where the CPU has it: 2.2-2.6x ONNX Runtime
    fp32 here, BENCHMARKS.md), and `make serve` the same, unless the environment pins a kind."""
    env = " ".join(rest for word, rest in runtime_stages(ROOT / "Dockerfile")["cpu"] if word == "ENV")
    assert "FEWSTEP_BACKEND__KIND=auto" in env
    serve = re.search(r"^serve:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert serve and "FEWSTEP_BACKEND__KIND=$${FEWSTEP_BACKEND__KIND:-auto}" in serve.group(1)


def test_the_image_compose_kubernetes_and_make_serve_keep_the_start_up_timings():
    """The CPU image sets a tuning cache in a directory its user owns; compose and Kubernetes mount
    a volume there, so a restarted container reuses its machine's timings (service/tuning.py);
    `make serve` keeps them once per machine, outside the clone (the user's cache directory), so
    that every clone on the machine reuses them."""
    import yaml

    body = runtime_stages(ROOT / "Dockerfile")["cpu"]
    env = " ".join(rest for word, rest in body if word == "ENV")
    found = re.search(r"FEWSTEP_TUNING_CACHE=(\S+)", env)
    assert found, "the CPU image sets no FEWSTEP_TUNING_CACHE"
    cache_dir = str(Path(found.group(1)).parent)
    run = " ".join(rest for word, rest in body if word == "RUN")
    assert f"mkdir -p {cache_dir}" in run and f"chown fewstep:fewstep {cache_dir}" in run
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert any(v.endswith(f":{cache_dir}") for v in compose["services"]["fewstep"]["volumes"])
    deployments = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/deployment.yaml").read_text()) if d]
    cpu = next(d for d in deployments if d["metadata"]["name"] == "fewstep")
    mounts = {m["mountPath"] for m in cpu["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert cache_dir in mounts
    makefile = (ROOT / "Makefile").read_text()
    serve = re.search(r"^serve:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert serve and "FEWSTEP_TUNING_CACHE=$${FEWSTEP_TUNING_CACHE:-$(TUNING_CACHE)}" in serve.group(1)
    assert re.search(r"^TUNING_CACHE \?= \$\(CACHE_HOME\)/fewstep/tuning\.json$", makefile, re.M)


def test_the_image_and_make_bundles_export_through_one_script():
    """The bundles stage and `make bundles` export with scripts/export-bundle.sh, so the image's
    bundles record the same results rows and bf16 measurements as the host's (the stage once named
    a teacher row that had moved away, which only its export path would have hit)."""
    body = " ".join(rest for word, rest in stages(ROOT / "Dockerfile")["bundles"] if word == "RUN")
    assert 'bash /src/scripts/export-bundle.sh "$m" "/bundles/$m"' in body
    assert "for m in teacher $STUDENTS" in body and "fewstep export --model" not in body
    copies = [rest for word, rest in stages(ROOT / "Dockerfile")["bundles"] if word == "COPY"]
    assert "results/precision/ /src/results/precision/" in copies
    make = (ROOT / "Makefile").read_text()
    assert make.count("scripts/export-bundle.sh $* bundles/$*") == 1
    assert make.count("scripts/export-bundle.sh teacher bundles/teacher") == 1
