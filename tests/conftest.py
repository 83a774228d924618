"""Shared fixtures: the real MiniLM encoder (loaded once) and a tiny random BERT built in the test;
and `require_tool` / `require_module` / `missing`, which the tests that need a system tool or an
optional package call instead of skipping by hand.

Without `FEWSTEP_REQUIRE_TOOLS` a missing tool skips the test with its reason, so `make test` runs
everywhere; with `FEWSTEP_REQUIRE_TOOLS=1` (set by .ci/run, after installing the system packages)
it fails the test instead, so CI cannot pass by skipping the end-to-end, Prometheus, Chromium and
live-compose tests.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REQUIRE_TOOLS = "FEWSTEP_REQUIRE_TOOLS"


def tools_required() -> bool:
    """Whether a missing tool fails a test (FEWSTEP_REQUIRE_TOOLS=1/true/yes) instead of skipping it."""
    value = os.environ.get(REQUIRE_TOOLS, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise pytest.UsageError(f"{REQUIRE_TOOLS}={value!r}: use 1 (missing tools fail tests) or 0 (they skip)")


def missing(reason: str) -> NoReturn:
    """What a test does when something it needs is absent: skip, or fail under FEWSTEP_REQUIRE_TOOLS=1."""
    if tools_required():
        pytest.fail(f"{reason} ({REQUIRE_TOOLS}=1: a missing tool fails the test instead of skipping it)")
    pytest.skip(reason, allow_module_level=True)  # also at a test module's top, as importorskip is


def require_tool(name: str, reason: str) -> str:
    """The path of executable `name`; `missing(reason)` when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        missing(f"no `{name}`: {reason}")
    return path


def require_module(name: str, reason: str) -> ModuleType:
    """`pytest.importorskip` that fails instead under FEWSTEP_REQUIRE_TOOLS=1."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"no Python package `{name}`: {reason}")


def signal_stack_problem() -> str | None:
    """What is wrong with this thread's signal stack (`sigaltstack`), or None: enabled but not
    mapped memory. A native library that leaves the stack on memory it freed makes the next signal
    with a Python handler (they run on that stack) kill the process with SIGSEGV, far from the
    cause: CI once lost its whole test process that way (service.backends.openvino.shared_core)."""
    import ctypes

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    st = Stack()
    if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st)) != 0 or st.flags & 2 or not st.sp:  # 2: SS_DISABLE
        return None
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= st.sp and st.sp + st.size <= hi:
                return None
    return f"the signal stack at {st.sp:#x} ({st.size} bytes) is not mapped memory"


@pytest.fixture(autouse=True)
def _signal_stack_stays_valid():
    """Fails the test that left the process's signal stack on freed memory, instead of a segfault
    at some later test's first signal (Linux only: /proc/self/maps)."""
    yield
    if os.path.exists("/proc/self/maps") and (problem := signal_stack_problem()):
        pytest.fail(f"after this test {problem}: the next signal with a Python handler would crash the process")


@pytest.fixture(scope="session")
def minilm():
    from distill.kit.config import TextConfig
    from distill.kit.text import TextEncoder

    return TextEncoder(TextConfig(max_tokens=28))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT with a word-level vocabulary, saved as an HF directory.

    Skips without torch and transformers, and so does every test built on it (the tiny bundles are
    exported by distill): the service's suite runs without the offline side installed."""
    pytest.importorskip("torch", reason="the tiny text encoder and bundles are built with torch (distill)")
    pytest.importorskip("transformers", reason="the tiny text encoder is a transformers BERT")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    import shapesworld as shapes

    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(
        {w for i in range(500) for w in shapes.sample(0, i).caption.replace(",", " , ").replace(":", " : ").split()}
    )
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ":", *[w for w in words if w not in {",", ":"}]]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    BertModel(cfg).save_pretrained(path)
    return path


def make_packed_model(
    path, encoder_dir, guidance_input: bool = False, seed: int = 0, text_dim: int = 32, overrides: tuple[str, ...] = ()
):
    """A packed model (`fewstep pack` layout) of a tiny UNet with random, non-trivial weights.

    The UNet zero-initialises its output layers (so training starts at the identity-like
    prediction); every parameter is perturbed here so that export/parity checks compare real
    computations rather than zeros.
    """
    import json

    import torch
    from safetensors.torch import save_file

    from distill.kit.config import load_config
    from fewstep.networks import build_denoiser

    overrides = [f"text.encoder={encoder_dir}", f"model.text_dim={text_dim}", "text.max_tokens=16", *overrides]
    if guidance_input:
        overrides.append("model.guidance_input=true")
    cfg = load_config("tiny", None, overrides)
    torch.manual_seed(seed)
    model = build_denoiser(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors")
    # Adam second moments (what `fewstep pack` keeps for mm-param's preconditioner), fp32 like pack.
    adam_v = {k: (1e-6 + 1e-4 * torch.rand_like(p)).float() for k, p in model.named_parameters()}
    save_file(adam_v, path / "adam_v.safetensors")
    (path / "config.json").write_text(json.dumps({"config": cfg.model_dump(mode="json"), "step": 0}))
    return path


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """One text-encoder graph cache for the whole session. Export caches that graph by the encoder's
    weights hash (`distill.export.bundle.text_encoder_onnx`), and every tiny model here shares
    `tiny_bert_dir`'s encoder: one export of it (several seconds on a CI core) instead of one per
    test that exports a bundle."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_bert_dir, onnx_cache):
    """A real bundle (ONNX graphs, tokenizer, manifest) of a tiny random teacher: steps 2, 4."""
    from distill.export.bundle import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("bundles")
    model = make_packed_model(root / "models" / "tiny", tiny_bert_dir)
    export_bundle(model, root / "tiny", ExportOptions(steps=(2, 4), default_steps=2, cache_dir=onnx_cache, max_batch=8))
    return root / "tiny"


@pytest.fixture(scope="session")
def tiny_student_bundle(tmp_path_factory, tiny_bert_dir, onnx_cache):
    """A tiny random student (guidance scale as a network input): steps 1, 2."""
    from distill.export.bundle import ExportOptions, export_bundle

    root = tmp_path_factory.mktemp("bundles")
    model = make_packed_model(root / "models" / "tiny-student", tiny_bert_dir, guidance_input=True, seed=1)
    export_bundle(model, root / "tiny-student", ExportOptions(steps=(1, 2), cache_dir=onnx_cache, max_batch=8))
    return root / "tiny-student"


@pytest.fixture(scope="session")
def default_bundles():
    """The directory of the default bundles (`make bundles`); built here if missing (about 20 s)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bundles = root / "bundles"
    if not (bundles / "teacher" / "manifest.json").is_file():
        import subprocess

        subprocess.run(["make", "-C", str(root), "bundles"], check=True)
    return bundles
