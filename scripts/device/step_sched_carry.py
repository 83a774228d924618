"""Build `.gpu/step_sched/` for `step_sched.sh`: the bundle the step-scheduling benchmark serves
(`bundles/teacher-48`: models/teacher exported with steps 4 and 8), made here so that the GPU
machine needs neither transformers nor the ONNX exporter, and small enough to carry.

A bundle holds a 90 MB fp32 text encoder graph, more than the device takes. Exported from the
MiniLM copy carried for the GPU runs (`.gpu/minilm`, from make_carry.py: fp16 weights, the
embedding rows of words no shapes-world caption uses zeroed; the GPU-trained teacher was trained
on these), its initializers are fp16 values stored as fp32 and zero rows, which xz packs to a
fraction of its size; step_sched.sh unpacks it. The denoiser graph is the committed one
(models/teacher/denoiser.onnx, reused: its sidecar names these weights) and the torch weights are
models/teacher/model.safetensors byte for byte, so they are left out here and step_sched.sh takes
them from the tree. The manifest hashes every file, so the servers' bundle check is the proof
that the bundle put together there is this one.

    .venv/bin/python scripts/device/step_sched_carry.py        # after make_carry.py
"""

from __future__ import annotations

import gzip
import json
import lzma
import shutil
import sys
import tempfile
from pathlib import Path

MODEL = Path("models/teacher")
MINILM = Path(".gpu/minilm")
OUT = Path(".gpu/step_sched")
NAME = "teacher-48"
STEPS = (4, 8)
PACKED = "text_encoder.onnx"
# bundle file -> the committed file it equals (taken from the tree on the GPU machine)
FROM_TREE = {"denoiser.onnx": MODEL / "denoiser.onnx", "torch/model.safetensors": MODEL / "model.safetensors"}


def fp32_minilm(dst: Path) -> Path:
    """The carried fp16 MiniLM as an fp32 Hugging Face directory (what prep.py builds on the GPU)."""
    from safetensors.torch import load, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for f in MINILM.iterdir():
        if not f.name.startswith("model16"):
            shutil.copy(f, dst / f.name)
    sd = load(gzip.decompress((MINILM / "model16.safetensors.gz").read_bytes()))
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(dst / "model.safetensors"))
    return dst


def committed_graph_is_current() -> bool:
    """Whether export reuses models/teacher/denoiser.onnx (else it would rewrite a tracked file)."""
    from distill.export.recipe import CURRENT
    from fewstep.bundle import sha256_file

    meta = json.loads((MODEL / "denoiser.onnx.json").read_text())
    return (
        meta.get("weights_sha256") == sha256_file(MODEL / "model.safetensors")
        and meta.get("graph_sha256") == sha256_file(MODEL / "denoiser.onnx")
        and meta.get("recipe") == CURRENT.key
    )


def leave_out_committed(bundle: Path) -> None:
    """Drop the bundle files that equal committed ones (step_sched.sh copies those back)."""
    from fewstep.bundle import sha256_file

    for name, committed in FROM_TREE.items():
        if sha256_file(bundle / name) != sha256_file(committed):
            raise SystemExit(f"{bundle / name} differs from {committed}: step_sched.sh would rebuild another bundle")
        (bundle / name).unlink()


def main() -> int:
    import distill.kit.text
    from distill.export.bundle import ExportOptions, export_bundle

    if not (MINILM / "model16.safetensors.gz").is_file():
        print(f"{MINILM} is missing: run scripts/device/make_carry.py first", file=sys.stderr)
        return 1
    if not committed_graph_is_current():
        print(f"{MODEL}/denoiser.onnx is stale: re-export the model's bundle first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        minilm = fp32_minilm(Path(tmp) / "minilm")
        distill.kit.text.bundled_minilm_dir = lambda: minilm  # the text config names "minilm"
        export_bundle(MODEL, Path(tmp) / "bundles" / NAME, ExportOptions(steps=STEPS, cache_dir=Path(tmp) / "cache"))
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        dst = OUT / NAME
        shutil.copytree(Path(tmp) / "bundles" / NAME, dst, ignore=shutil.ignore_patterns(PACKED))
        graph = (Path(tmp) / "bundles" / NAME / PACKED).read_bytes()
        leave_out_committed(dst)
        (dst / (PACKED + ".xz")).write_bytes(lzma.compress(graph, preset=6))
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"wrote {OUT} ({total / 2**20:.1f} MiB; {PACKED} {len(graph) / 2**20:.1f} MiB unpacked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
