"""The bundle: the seam between offline export and online serving (`docs/architecture.md`).

A bundle is a directory of ONNX graphs, tokenizer files and `manifest.json`. The manifest is a
versioned pydantic model recording everything the service needs and nothing it must recompute:
the resolution, each supported step count's time grid and float64-derived posterior
coefficients, the guidance range, the text encoder, the graphs' input/output names, dtypes and
dynamic axes (one declaration that drives both the ONNX export and the TensorRT build), the
sha256 of every file, and the model's evaluation figures. `load_manifest` trusts nothing else:
it refuses a bundle whose files are missing or whose hashes differ, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from fewstep.config import StrictModel, format_validation_error
from fewstep.schedule import StepPlan, step_plan

MANIFEST = "manifest.json"
STEP_SIZE_INPUT = "d"  # the denoiser input of a shortcut student: the step size 1/K of each row
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A bundle that cannot be served: the message names the file or the manifest key."""


class TensorSpec(StrictModel):
    """One graph input or output. String dimensions are dynamic axes (named, e.g. 'batch')."""

    name: str
    dtype: Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"]
    shape: tuple[int | str, ...]


class GraphSpec(StrictModel):
    """A graph file and its I/O, plus the batch range its engines must support."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    min_batch: int = Field(1, ge=1)
    opt_batch: int = Field(16, ge=1)
    max_batch: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _batches(self) -> GraphSpec:
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError("need min_batch <= opt_batch <= max_batch")
        return self


def denoiser_graph(
    resolution: int,
    channels: int,
    max_tokens: int,
    hidden: int,
    network_input: bool,
    file: str = "denoiser.onnx",
    max_batch: int = 64,
    opt_batch: int = 16,
    step_size_input: bool = False,
) -> GraphSpec:
    """The denoiser graph's one declaration: ONNX export names and dynamic axes, TensorRT profiles.

    One network evaluation x_hat = D(z, t, text, [w], [d]); 'batch' is the only dynamic axis. d is
    the sampler's step size 1/K of a shortcut student (`step_size_input`), one value per row.
    """
    inputs = [
        TensorSpec(name="z", dtype="float32", shape=("batch", channels, resolution, resolution)),
        TensorSpec(name="t", dtype="float32", shape=("batch",)),
        TensorSpec(name="text_states", dtype="float32", shape=("batch", max_tokens, hidden)),
        TensorSpec(name="text_mask", dtype="int64", shape=("batch", max_tokens)),
    ]
    if network_input:
        inputs.append(TensorSpec(name="w", dtype="float32", shape=("batch",)))
    if step_size_input:
        inputs.append(TensorSpec(name=STEP_SIZE_INPUT, dtype="float32", shape=("batch",)))
    out = TensorSpec(name="x_hat", dtype="float32", shape=("batch", channels, resolution, resolution))
    return GraphSpec(
        file=file, inputs=tuple(inputs), outputs=(out,), opt_batch=min(opt_batch, max_batch), max_batch=max_batch
    )


def text_encoder_graph(
    max_tokens: int, hidden: int, file: str = "text_encoder.onnx", max_batch: int = 64, opt_batch: int = 16
) -> GraphSpec:
    """The text encoder graph's declaration: token ids and mask (padded to max_tokens) to states."""
    return GraphSpec(
        file=file,
        inputs=(
            TensorSpec(name="input_ids", dtype="int64", shape=("batch", max_tokens)),
            TensorSpec(name="attention_mask", dtype="int64", shape=("batch", max_tokens)),
        ),
        outputs=(TensorSpec(name="text_states", dtype="float32", shape=("batch", max_tokens, hidden)),),
        opt_batch=min(opt_batch, max_batch),
        max_batch=max_batch,
    )


class StepSchedule(StrictModel):
    """A `fewstep.schedule.StepPlan`, stored so serving never recomputes schedule maths."""

    t: tuple[float, ...]
    s: tuple[float, ...]
    alpha_t: tuple[float, ...]
    sigma_t: tuple[float, ...]
    alpha_s: tuple[float, ...]
    sigma_s: tuple[float, ...]
    c_z: tuple[float, ...]
    c_x: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def from_plan(plan: StepPlan) -> StepSchedule:
        return StepSchedule.model_validate(plan.to_dict())

    def to_plan(self) -> StepPlan:
        import numpy as np

        return StepPlan(**{k: np.asarray(getattr(self, k), dtype=np.float64) for k in StepPlan.__dataclass_fields__})


class GuidanceSpec(StrictModel):
    min: float = Field(1.0, ge=0)
    max: float = Field(8.0, ge=0)
    default: float = Field(3.0, ge=0)
    network_input: bool = Field(False, description="the denoiser takes w (a student): one evaluation per step")


class TextSpec(StrictModel):
    name: str
    max_tokens: int = Field(ge=2)
    hidden: int = Field(ge=1)
    tokenizer_files: tuple[str, ...]
    null_prompt: str = ""


# The stated threshold a reduced-precision path must pass on a bundle to be served by kind=auto
# (`PrecisionCheck`): adherence on fixed prompts and seeds may drop by at most 2 points from fp32
# (and the drop's 95% upper bound by at most 5), and the images may move by at most 4 of 255
# levels on average (a broken path, NaN or garbage, moves them by tens).
MAX_ADHERENCE_DROP = 0.02
MAX_ADHERENCE_DROP_UPPER = 0.05
MAX_PIXEL_MEAN_ABS = 4.0


class PrecisionCheck(StrictModel):
    """One reduced-precision path measured on this bundle against the same backend in fp32.

    Written by `python -m scripts.precision` (the bundle's own sampler on fixed prompts and seeds,
    scored by the frozen evaluator); `backend.kind = "auto"` serves the path only where `passed`.
    `passed` is stored for readers and checked against the figures and thresholds, so an edited
    manifest cannot permit a path its own measurement refused."""

    backend: str
    precision: Literal["bf16", "fp16", "int8"]
    reference: str = Field(description="the fp32 path compared against, e.g. 'openvino-fp32'")
    n_images: int = Field(ge=1)
    steps: int
    guidance: float
    prompts: str = Field(description="which fixed prompts and seeds")
    denoiser_sha256: str = Field(
        description="the denoiser graph measured: a re-export keeps the check only while the graph is the same"
    )
    pixel_mean_abs: float = Field(ge=0, description="mean |reduced - fp32| over all pixels, in 0-255 levels")
    pixel_max_abs: float = Field(ge=0)
    images_moved: float = Field(ge=0, le=1, description="share of images whose mean |difference| exceeds 8 levels")
    adherence_reference: float = Field(ge=0, le=1)
    adherence: float = Field(ge=0, le=1)
    adherence_drop: float = Field(description="adherence_reference - adherence, paired over the same prompts and seeds")
    adherence_drop_ci: tuple[float, float] = Field(description="95% paired bootstrap interval of the drop")
    max_adherence_drop: float = MAX_ADHERENCE_DROP
    max_adherence_drop_upper: float = MAX_ADHERENCE_DROP_UPPER
    max_pixel_mean_abs: float = MAX_PIXEL_MEAN_ABS
    passed: bool
    machine: str = ""
    measured_at: datetime | None = None
    command: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.precision}"

    def measured_graph_of(self, manifest: Manifest) -> bool:
        """Whether this check measured `manifest`'s denoiser graph (not an earlier export's)."""
        return self.denoiser_sha256 == manifest.files.get(manifest.graphs["denoiser"].file, "")

    def meets_threshold(self) -> bool:
        """The stated rule: the drop and its upper bound within their limits, the pixels within theirs."""
        return (
            self.adherence_drop <= self.max_adherence_drop
            and self.adherence_drop_ci[1] <= self.max_adherence_drop_upper
            and self.pixel_mean_abs <= self.max_pixel_mean_abs
        )

    def why(self) -> str:
        """The figures against the threshold, in one line (the selection logs it)."""
        lo, hi = self.adherence_drop_ci
        return (
            f"{self.label} vs {self.reference} on {self.n_images} images: adherence drop {self.adherence_drop:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] (limit {self.max_adherence_drop:.2f}, upper {self.max_adherence_drop_upper:.2f}), "
            f"pixels {self.pixel_mean_abs:.2f} levels (limit {self.max_pixel_mean_abs:g})"
        )

    @model_validator(mode="after")
    def _consistent(self) -> PrecisionCheck:
        if self.passed != self.meets_threshold():
            raise ValueError(f"passed={self.passed} contradicts the figures: {self.why()}")
        return self


class Manifest(StrictModel):
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    resolution: int = Field(ge=8)
    channels: int = Field(3, ge=1)
    sampler: Literal["ancestral", "ddim"] = "ancestral"
    steps: dict[int, StepSchedule]
    default_steps: int
    guidance: GuidanceSpec
    text: TextSpec
    graphs: dict[str, GraphSpec]
    precision: dict[str, str] = Field(
        default_factory=lambda: {"onnxruntime": "fp32", "torch": "bf16", "tensorrt": "fp16"},
        description="the precision a backend pinned with precision=auto runs, a default of every bundle, not a "
        "measurement of this one (BENCHMARKS.md: torch bf16 is 1.5-2x faster from batch 16 on this CPU at FD "
        "and adherence within noise of fp32; ONNX Runtime int8/fp16 graphs are no faster here); "
        "backend.kind=auto reads reduced_precision instead",
    )
    source: dict[str, Any] = Field(default_factory=dict, description="weights, config and git sha exported from")
    exported_at: datetime | None = Field(None, description="when the bundle was exported (UTC); None if not recorded")
    parity: dict[str, float] = Field(default_factory=dict, description="export-time checks against torch")
    files: dict[str, str] = Field(default_factory=dict, description="relative path -> sha256")
    evaluation: dict[str, Any] = Field(default_factory=dict)
    reduced_precision: dict[str, PrecisionCheck] = Field(
        default_factory=dict,
        description="measured reduced-precision paths by label ('openvino-bf16'): what backend.kind=auto may serve "
        "besides fp32 (an unmeasured path is not served)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        for label, check in self.reduced_precision.items():
            if label != check.label:
                raise ValueError(f"reduced_precision: {label!r} holds a measurement of {check.label!r}")
        if self.default_steps not in self.steps:
            raise ValueError(f"default_steps {self.default_steps} is not among steps {sorted(self.steps)}")
        g = self.guidance
        if not g.min <= g.default <= g.max:
            raise ValueError("guidance needs min <= default <= max")
        for k, sched in self.steps.items():
            if len(sched.t) != k:
                raise ValueError(f"steps.{k} has {len(sched.t)} entries")
        missing = {"text_encoder", "denoiser"} - set(self.graphs)
        if missing:
            raise ValueError(f"graphs lacks {sorted(missing)}")
        if self.takes_step_size:
            odd = sorted(k for k in self.steps if k & (k - 1))
            if odd:
                raise ValueError(f"steps {odd}: a shortcut denoiser (input 'd') serves power-of-two step counts only")
        return self

    @property
    def takes_step_size(self) -> bool:
        """Whether the denoiser takes the step size d = 1/K (a shortcut student: one graph for every
        K in `steps`, each request's rows fed d = 1 / its steps)."""
        return any(i.name == STEP_SIZE_INPUT for i in self.graphs["denoiser"].inputs)

    def plan(self, steps: int) -> StepPlan:
        if steps not in self.steps:
            raise BundleError(f"bundle {self.name!r} supports steps {sorted(self.steps)}, not {steps}")
        return self.steps[steps].to_plan()


def step_schedules(step_counts: list[int]) -> dict[int, StepSchedule]:
    return {k: StepSchedule.from_plan(step_plan(k)) for k in step_counts}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: str | Path, manifest: Manifest) -> Path:
    """Hash every file in the bundle (but the manifest) into `files` and write manifest.json."""
    directory = Path(directory)
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    final = manifest.model_copy(update={"files": files})
    path = directory / MANIFEST
    path.write_text(final.model_dump_json(indent=2))
    return path


def load_manifest(directory: str | Path, verify: bool = True) -> Manifest:
    """Read and validate a bundle's manifest; with `verify`, check every file's sha256."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory} is not a bundle: {MANIFEST} is missing")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    except ValidationError as e:
        raise BundleError(f"{path} is invalid:\n" + format_validation_error(e, "  ")) from None
    referenced = {g.file for g in manifest.graphs.values()} | set(manifest.text.tokenizer_files)
    unlisted = sorted(referenced - set(manifest.files))
    if unlisted:
        raise BundleError(f"{path}: files {unlisted} are used but have no sha256 in the manifest")
    if verify:
        for rel, digest in manifest.files.items():
            f = directory / rel
            if not f.is_file():
                raise BundleError(f"bundle {directory}: file {rel} is missing")
            if sha256_file(f) != digest:
                raise BundleError(f"bundle {directory}: file {rel} does not match its sha256 in {MANIFEST}")
    return manifest
