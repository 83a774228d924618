"""`fewstep export`: a trained model -> a bundle (ONNX graphs, tokenizer, torch weights, manifest).

The graphs' names, dtypes and dynamic axes come from one declaration (`fewstep.bundle.
denoiser_graph` / `text_encoder_graph`) that the TensorRT build reads back from the manifest, so
export and engine profiles cannot disagree. Export goes through `torch.onnx.export(dynamo=True)`
with 'batch' as the only dynamic axis (text is padded to `max_tokens`, so no sequence axis), and
every graph is checked against torch in ONNX Runtime before the bundle is written: the bundle
records the measured max abs difference and export fails above `PARITY_TOL`. A re-export keeps the
bundle's reduced-precision measurements (`scripts.precision`) while its denoiser graph is unchanged.

The denoiser graph of a committed model is kept beside its weights (`models/NAME/denoiser.onnx`,
with a sidecar naming the weights' sha256), reused while the weights are unchanged and
re-exported when they change or when the export recipe (`distill.export.recipe`: opset, fused
attention, GroupNorm form) differs from the one that made it. The text encoder graph (90 MB for
MiniLM) is generated from the installed package into a cache and hard-linked into each bundle.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill.export.recipe import CURRENT, LEGACY, Recipe, translation_table
from distill.kit.checkpoint import PACKED_CONFIG, PACKED_WEIGHTS, load_denoiser, student_info
from distill.kit.config import TextConfig, TrainConfig
from distill.kit.text import load_hf_encoder, resolve_encoder_dir
from fewstep.bundle import (
    STEP_SIZE_INPUT,
    BundleError,
    GraphSpec,
    GuidanceSpec,
    Manifest,
    PrecisionCheck,
    TextSpec,
    denoiser_graph,
    load_manifest,
    sha256_file,
    step_schedules,
    text_encoder_graph,
    write_manifest,
)
from fewstep.networks import Denoiser
from fewstep.provenance import git_revision

log = logging.getLogger(__name__)
logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per deduplicated initializer

PARITY_TOL = 1e-4
TEACHER_STEPS = (8, 16, 32, 64)
TEACHER_DEFAULT_STEPS = 16  # the cheapest ancestral row of results/teacher.md within ~15% of the 64-step FD
TORCH_DIR = "torch"
_TORCH_DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16, "int32": torch.int32}


class ExportError(RuntimeError):
    pass


class DenoiserGraph(nn.Module):
    """The exported signature: text_mask as int64 (ONNX/TensorRT friendly), bool inside."""

    def __init__(self, model: Denoiser) -> None:
        super().__init__()
        self.model = model

    def forward(self, z, t, text_states, text_mask, w=None, d=None):
        return self.model(z, t, text_states, text_mask.bool(), w, d)


class TextGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()


def example_inputs(spec: GraphSpec, batch: int, seed: int = 0, vocab: int = 1000) -> list[torch.Tensor]:
    """Random inputs matching the declaration (masks: leading ones, like padded prompts)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in spec.inputs:
        shape = tuple(batch if d == "batch" else int(d) for d in i.shape)
        if i.name in ("text_mask", "attention_mask"):
            lengths = torch.randint(2, shape[1] + 1, (batch,), generator=gen)
            out.append((torch.arange(shape[1])[None] < lengths[:, None]).long())
        elif i.name == "input_ids":
            out.append(torch.randint(1, vocab, shape, generator=gen))
        elif i.name == "t":
            out.append(torch.rand(shape, generator=gen))
        elif i.name == "w":
            out.append(1.0 + 4.0 * torch.rand(shape, generator=gen))
        elif i.name == STEP_SIZE_INPUT:  # a shortcut student's d = 1/K, K = 1, 2, 4 or 8
            out.append(0.5 ** torch.randint(0, 4, shape, generator=gen).float())
        else:
            out.append(torch.randn(shape, generator=gen, dtype=_TORCH_DTYPES[i.dtype]))
    return out


def export_onnx(module: nn.Module, spec: GraphSpec, path: Path, vocab: int = 1000, recipe: Recipe = LEGACY) -> None:
    """torch.onnx.export (dynamo) driven by the graph declaration: names and dynamic axes; `recipe`
    picks the opset and the operator lowerings (the text encoder keeps the exporter's defaults)."""
    dims: dict[str, torch.export.Dim] = {}
    dynamic: dict[str, dict[int, Any]] = {}
    for i in spec.inputs:
        axes = {
            k: dims.setdefault(d, torch.export.Dim(d, min=1, max=4096))
            for k, d in enumerate(i.shape)
            if isinstance(d, str)
        }
        dynamic[i.name] = axes
    args = tuple(example_inputs(spec, batch=2, vocab=vocab))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter's step-by-step INFO lines, and its warning that torchvision (which we never use)
    # is not installed, are noise in `make serve`'s log.
    quiet = {
        "onnxscript": logging.WARNING,
        "onnx_ir": logging.WARNING,
        "torch.onnx": logging.WARNING,
        "torch.export": logging.WARNING,
        "torch.onnx._internal.exporter._registration": logging.ERROR,
    }
    loggers = [logging.getLogger(n) for n in quiet]
    levels = [q.level for q in loggers]
    for q, level in zip(loggers, quiet.values(), strict=True):
        q.setLevel(max(q.level, level))
    try:
        _export_quietly(module, args, path, spec, dynamic, recipe)
    finally:
        for q, level in zip(loggers, levels, strict=True):
            q.setLevel(level)


def _export_quietly(module: nn.Module, args: tuple, path: Path, spec: GraphSpec, dynamic: dict, recipe: Recipe) -> None:
    with warnings.catch_warnings():
        # One Dim object serves every input's batch axis; the exporter still warns once per input.
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used.*")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
        _export(module, args, path, spec, dynamic, recipe)


def _export(module: nn.Module, args: tuple, path: Path, spec: GraphSpec, dynamic: dict, recipe: Recipe) -> None:
    extra: dict[str, Any] = {}
    if recipe.opset is not None:
        extra["opset_version"] = recipe.opset
    table = translation_table(recipe)
    if table:
        extra["custom_translation_table"] = table
    torch.onnx.export(
        module.eval(),
        args,
        str(path),
        input_names=[i.name for i in spec.inputs],
        output_names=[o.name for o in spec.outputs],
        dynamic_shapes=dynamic,
        dynamo=True,
        external_data=False,
        optimize=True,
        verbose=False,  # no "[torch.onnx] ..." progress lines
        **extra,
    )


def onnx_parity(
    module: nn.Module, spec: GraphSpec, path: Path, batches: Sequence[int] = (1, 5), vocab: int = 1000
) -> float:
    """Max abs difference ONNX Runtime (CPU, fp32) vs torch on random inputs at several batch sizes."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        args = example_inputs(spec, b, seed=b, vocab=vocab)
        with torch.inference_mode():
            ref = module(*args).float().numpy()
        got = sess.run([spec.outputs[0].name], {i.name: a.numpy() for i, a in zip(spec.inputs, args, strict=True)})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{path.name}: ONNX output shape {got.shape} != torch {ref.shape} at batch {b}")
        worst = max(worst, float(np.abs(got - ref).max()))
    if worst > PARITY_TOL:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_TOL:g})")
    return worst


def _sidecar(graph: Path) -> Path:
    return graph.with_name(graph.name + ".json")


def denoiser_onnx(
    model_dir: Path, model: Denoiser, spec: GraphSpec, scratch: Path, recipe: Recipe = CURRENT
) -> tuple[Path, float]:
    """The model's denoiser graph: the committed one if it was exported from these weights by this
    recipe, else a fresh export (written back beside the weights when the model directory is
    writable and the recipe is the current one; other recipes, for benchmarks, go to `scratch`)."""
    weights_sha = sha256_file(model_dir / PACKED_WEIGHTS) if (model_dir / PACKED_WEIGHTS).is_file() else None
    graph = model_dir / spec.file
    module = DenoiserGraph(model)
    if weights_sha and graph.is_file() and _sidecar(graph).is_file():
        meta = json.loads(_sidecar(graph).read_text())
        if meta.get("weights_sha256") == weights_sha and meta.get("graph_sha256") == sha256_file(graph):
            # A sidecar without a recipe predates recipes: recipe 1.
            if meta.get("inputs") == [i.name for i in spec.inputs] and meta.get("recipe", LEGACY.key) == recipe.key:
                log.info("reusing %s (exported from these weights, recipe %s)", graph, recipe.key)
                return graph, onnx_parity(module, spec, graph)
    writable = weights_sha and os.access(model_dir, os.W_OK) and recipe == CURRENT
    target = graph if writable else scratch / spec.file
    log.info("exporting the denoiser to %s (recipe %s)", target, recipe.key)
    export_onnx(module, spec, target, recipe=recipe)
    diff = onnx_parity(module, spec, target)
    if target == graph:
        meta = {
            "weights_sha256": weights_sha,
            "graph_sha256": sha256_file(graph),
            "inputs": [i.name for i in spec.inputs],
            "recipe": recipe.key,
            "torch": torch.__version__,
        }
        _sidecar(graph).write_text(json.dumps(meta, indent=2) + "\n")
    return target, diff


def text_encoder_onnx(text: TextConfig, spec: GraphSpec, cache_dir: Path) -> tuple[Path, Path, float]:
    """(text_encoder.onnx, tokenizer.json, parity) for the configured encoder, cached by source."""
    src = resolve_encoder_dir(text.encoder)
    weights = next((p for p in (src / "model.safetensors", src / "pytorch_model.bin") if p.is_file()), None)
    key = f"{sha256_file(weights)[:16] if weights else src.name}-L{text.max_tokens}-torch{torch.__version__}"
    out = cache_dir / key
    graph, tokenizer = out / spec.file, out / "tokenizer.json"
    model, tok = load_hf_encoder(src)
    module = TextGraph(model)
    vocab = int(model.config.vocab_size)
    if not (graph.is_file() and tokenizer.is_file()):
        log.info("exporting text encoder %s to %s", src, graph)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir))
        tmp.chmod(0o755)
        try:
            export_onnx(module, spec, tmp / spec.file, vocab=vocab)
            tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return graph, tokenizer, onnx_parity(module, spec, graph, batches=(1, 3), vocab=vocab)


def _place(src: Path, dst: Path) -> None:
    """Hard-link (the 90 MB text encoder is shared by every bundle), copying across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def kept_precision_checks(
    out: Path, denoiser_sha256: str, given: Sequence[PrecisionCheck] = ()
) -> dict[str, PrecisionCheck]:
    """The reduced-precision measurements the new bundle records: those `given` (the committed
    results/precision/NAME.json) and those of the bundle being replaced, where they measured this
    very denoiser graph. A re-export of the same graph keeps its measured permission (export cannot
    measure it: it sits below the service and the evaluator; `scripts.precision` does), a changed
    graph drops it and kind=auto serves fp32 until it is measured again."""
    try:
        old = list(load_manifest(out, verify=False).reduced_precision.values())
    except BundleError:
        old = []
    kept: dict[str, PrecisionCheck] = {}
    for c in [*old, *given]:  # a given measurement wins over the old bundle's
        if c.denoiser_sha256 == denoiser_sha256:
            kept[c.label] = c
        else:
            log.warning("%s: the %s measurement was of another denoiser graph; measure again (scripts.precision)",
                        out, c.label)  # fmt: skip
    return kept


def export_time() -> datetime:
    """When the bundle is exported (UTC): `SOURCE_DATE_EPOCH` when set (the reproducible-builds
    convention, so a rebuild can give a byte-identical manifest), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    return datetime.now(UTC).replace(microsecond=0)


def git_sha() -> str:
    """The commit the export ran at, `-dirty` when the tree had uncommitted changes (`fewstep.provenance`)."""
    return git_revision()


@dataclass(frozen=True)
class ExportOptions:
    """How a model becomes a bundle (`fewstep export`'s flags, one field each; None: the model's own).

    name: the model name served (default: the bundle directory's name); steps: the supported step
    counts (a student: its K; a teacher: 8 16 32 64); default_steps; guidance: (min, default, max)
    (a student: its training range; a teacher's default 3.0 is the best w of results/guidance.md);
    evaluation: results rows to record in the manifest; cache_dir: where the text encoder's graph is
    cached (default: the bundle's parent/.cache); max_batch: the largest batch the graphs' engines
    must support; recipe: how the denoiser is lowered to ONNX (`distill.export.recipe`, recorded in
    the manifest's `source.graph_recipe`); reduced_precision: committed measurements of reduced-precision
    paths (`scripts.precision`), recorded where they measured the graph written (`kept_precision_checks`)."""

    name: str | None = None
    steps: Sequence[int] | None = None
    default_steps: int | None = None
    guidance: tuple[float, float, float] | None = None
    evaluation: dict[str, Any] | None = None
    cache_dir: str | Path | None = None
    max_batch: int = 64
    recipe: Recipe = CURRENT
    reduced_precision: Sequence[PrecisionCheck] = ()


def export_bundle(model_path: str | Path, out: str | Path, options: ExportOptions = ExportOptions()) -> Manifest:
    """Write a complete, verified bundle at `out` (replacing it atomically) and return its manifest."""
    o = options
    name, steps, default_steps, guidance = o.name, o.steps, o.default_steps, o.guidance
    evaluation, cache_dir, max_batch, recipe = o.evaluation, o.cache_dir, o.max_batch, o.recipe
    model_path, out = Path(model_path), Path(out)
    model, cfg = load_denoiser(model_path)
    cfg: TrainConfig
    m = cfg.model
    name = name or out.name
    student = student_info(model_path)
    if steps is None:
        steps = (student["steps"],) if student else TEACHER_STEPS
        if m.step_size_input:  # a shortcut student serves every power of two up to its finest K
            steps = tuple(1 << j for j in range(student["steps"].bit_length()))
    steps = sorted(set(steps))
    # A student's default is its K; a shortcut student's its finest (most exact) K.
    default_steps = default_steps or (
        max(steps) if m.step_size_input else min(steps) if m.guidance_input else TEACHER_DEFAULT_STEPS
    )
    if default_steps not in steps:
        default_steps = min(steps)
    lo, w_default, hi = guidance or (tuple(student["guidance"]) if student else (1.0, 3.0, 8.0))
    guidance_spec = GuidanceSpec(min=lo, default=w_default, max=hi, network_input=m.guidance_input)
    cache_dir = Path(cache_dir) if cache_dir else out.parent / ".cache"
    den_spec = denoiser_graph(
        m.resolution, m.in_channels, cfg.text.max_tokens, m.text_dim, m.guidance_input, max_batch=max_batch,
        step_size_input=m.step_size_input,
    )  # fmt: skip
    txt_spec = text_encoder_graph(cfg.text.max_tokens, m.text_dim, max_batch=max_batch)

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    stage.chmod(0o755)  # mkdtemp's 0700 would hide the bundle from a non-root service user
    try:
        den_file, den_diff = denoiser_onnx(model_path, model, den_spec, stage / ".scratch", recipe)
        _place(den_file, stage / den_spec.file)
        shutil.rmtree(stage / ".scratch", ignore_errors=True)
        txt_file, tokenizer, txt_diff = text_encoder_onnx(cfg.text, txt_spec, cache_dir)
        _place(txt_file, stage / txt_spec.file)
        shutil.copy2(tokenizer, stage / "tokenizer.json")
        (stage / TORCH_DIR).mkdir()
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, stage / TORCH_DIR / "model.safetensors")
        (stage / TORCH_DIR / "unet.json").write_text(m.model_dump_json(indent=2) + "\n")
        manifest = Manifest(
            name=name,
            exported_at=export_time(),
            resolution=m.resolution,
            channels=m.in_channels,
            sampler=(student or {}).get("sampler", "ancestral"),  # pd and cd students: "ddim"
            steps=step_schedules(steps),
            default_steps=default_steps,
            guidance=guidance_spec,
            text=TextSpec(
                name=cfg.text.encoder,
                max_tokens=cfg.text.max_tokens,
                hidden=m.text_dim,
                tokenizer_files=("tokenizer.json",),
            ),
            graphs={"denoiser": den_spec, "text_encoder": txt_spec},
            source={
                "model": str(model_path),
                "weights_sha256": sha256_file(model_path / PACKED_WEIGHTS)
                if (model_path / PACKED_WEIGHTS).is_file()
                else None,
                "train_step": json.loads((model_path / PACKED_CONFIG).read_text()).get("step")
                if (model_path / PACKED_CONFIG).is_file()
                else None,
                "git_sha": git_sha(),
                "torch": torch.__version__,
                "graph_recipe": recipe.key,
            },
            parity={"denoiser_max_abs": den_diff, "text_encoder_max_abs": txt_diff},
            evaluation=evaluation or {},
            reduced_precision=kept_precision_checks(out, sha256_file(stage / den_spec.file), o.reduced_precision),
        )
        write_manifest(stage, manifest)
        load_manifest(stage)  # what the service will do: hashes and references must check out
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    log.info("bundle %s written to %s (denoiser parity %.1e, text %.1e)", name, out, den_diff, txt_diff)
    return load_manifest(out)
