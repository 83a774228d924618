"""The core's dependency rule (`docs/architecture.md`, "Packages"): at import, every `fewstep`
module needs the standard library, numpy and pydantic and nothing else; `fewstep.networks` is the
one module that adds torch. (Which first-party packages the core may import is the import
contract's business: `tests/test_layering.py`.)"""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import fewstep

ROOT = Path(__file__).resolve().parents[2]
TORCH_MODULES = {"networks"}


# What numpy and pydantic load themselves, a constrained model included (pydantic imports some
# of its helpers lazily, on the first model that needs them).
BASELINE = """
import numpy, pydantic
class M(pydantic.BaseModel):
    x: int = pydantic.Field(1, ge=0)
"""


def _third_party_after(code: str) -> set[str]:
    """Top-level modules outside the standard library (and not interpreter internals: `_name`) that a
    fresh interpreter has loaded after running `code`."""
    report = "\nimport json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    r = subprocess.run([sys.executable, "-c", code + report], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = set(json.loads(r.stdout.splitlines()[-1]))
    return {m for m in loaded - set(sys.stdlib_module_names) if not m.startswith("_")} - {"fewstep"}


def test_the_core_needs_numpy_and_pydantic_only():
    core = [f"fewstep.{m.name}" for m in pkgutil.iter_modules(fewstep.__path__) if m.name not in TORCH_MODULES]
    assert "fewstep.sampler" in core and "fewstep.bundle" in core
    allowed = _third_party_after(BASELINE)
    loaded = _third_party_after("".join(f"import {m}\n" for m in core))
    assert loaded <= allowed, sorted(loaded - allowed)


def test_networks_is_the_torch_module():
    assert "torch" in _third_party_after("import fewstep.networks")
