import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_core_and_service_import_without_torch():
    code = (
        "import sys; import fewstep.schedule, fewstep.sampler, fewstep.rng, fewstep.shapes, fewstep.config, "
        "service.app, fewstep.cli; fewstep.cli.build_parser(); "
        "bad = [m for m in ('torch', 'transformers', 'distill.train') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Contracts: 3 kept, 0 broken" in r.stdout
