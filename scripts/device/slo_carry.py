"""Build `.gpu/slo/` for `slo.sh`: the default students' bundles (`bundles/mm-alt-k8`,
`bundles/pd-k4`) without their text encoder, which both share (the same sha256 in both manifests)
and which is carried once, xz-packed (`text_encoder.onnx.xz`); slo.sh unpacks it into each bundle,
and the service's hash check on loading proves the bundles put together there are these.

It prints the carried size: a call takes 64 MiB with the tree and the wheels. Where the packed
encoder is too large for that (an fp32 MiniLM packs poorly), export the two students against the
carried fp16 MiniLM as `step_sched_carry.py` does for the teacher, and carry those bundles instead.

    .venv/bin/python scripts/device/slo_carry.py
"""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

BUNDLES = (Path("bundles/mm-alt-k8"), Path("bundles/pd-k4"))
OUT = Path(".gpu/slo")
ENCODER = "text_encoder.onnx"
BUDGET_MB = 40  # of the 64 MiB a call takes: the tree and the wheels need the rest


def main() -> int:
    digests = {json.loads((b / "manifest.json").read_text())["files"][ENCODER] for b in BUNDLES}
    if len(digests) != 1:
        print(f"the bundles' text encoders differ ({sorted(digests)}): carry each", file=sys.stderr)
        return 1
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    for b in BUNDLES:
        shutil.copytree(b, OUT / b.name, ignore=shutil.ignore_patterns(ENCODER))
    packed = lzma.compress((BUNDLES[0] / ENCODER).read_bytes(), preset=9 | lzma.PRESET_EXTREME)
    (OUT / f"{ENCODER}.xz").write_bytes(packed)
    size = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file()) / 2**20
    print(f"{OUT}: {size:.1f} MiB ({ENCODER}.xz {len(packed) / 2**20:.1f} MiB)")
    if size > BUDGET_MB:
        print(f"over the {BUDGET_MB} MiB this call can carry beside the wheels: see this file's docstring")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
