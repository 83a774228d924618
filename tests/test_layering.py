"""The layering (`docs/architecture.md`): the import contracts in pyproject.toml hold with no
exception listed, the service and the command list load without torch, and the benchmarks and
device scripts use the public names of the packages they measure."""

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fewstep", "fewstep_cli", "shapesworld", "distill", "service", "bench", "scripts")


def test_import_contracts_hold_with_no_ignored_imports():
    linter = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert set(linter["root_packages"]) == set(PACKAGES)
    assert not [c["name"] for c in linter["contracts"] if c.get("ignore_imports")]
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Contracts: {len(linter['contracts'])} kept, 0 broken" in r.stdout


def test_service_and_command_list_import_without_torch():
    code = (
        "import sys; import service.app, fewstep_cli.main; fewstep_cli.main.build_parser(); "
        "bad = [m for m in ('torch', 'transformers', 'distill.teacher.train') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _foreign_private_imports(path: Path, own: str) -> list[str]:
    """`from pkg.mod import _name` (or `import pkg._mod`) where pkg is another first-party package."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            parts = node.module.split(".")[1:]
            if top in PACKAGES and top != own:
                names = [a.name for a in node.names]
                if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {', '.join(names)}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                top, *parts = a.name.split(".")
                if top in PACKAGES and top != own and any(p.startswith("_") for p in parts):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} import {a.name}")
    return bad


def test_bench_and_scripts_use_public_names_only():
    bad = [
        line
        for own in ("bench", "scripts")
        for path in sorted((ROOT / own).rglob("*.py"))
        for line in _foreign_private_imports(path, own)
    ]
    assert not bad, bad
