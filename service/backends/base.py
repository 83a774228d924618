"""The backend protocols every serving backend implements, and how a bundle picks one.

A backend runs *one network evaluation* over a batch, numpy in and numpy out; it knows nothing of
samplers, guidance or seeds. The k-step loop is the shared `fewstep.sampler` for every backend
(`service/pipeline.py`), so backends differ only in how fast and how exactly they evaluate.

Shapes (B = batch, L = max_tokens, D = text hidden size, C/R = channels/resolution):

    denoiser(z (B,C,R,R) f32, t (B,) f32, states (B,L,D) f32, mask (B,L) i64, w (B,) f32 | None,
             d (B,) f32 | None) -> x_hat (B,C,R,R) f32
    text_encoder(input_ids (B,L) i64, attention_mask (B,L) i64) -> states (B,L,D) f32

`w` is passed only to students (`manifest.guidance.network_input`); a teacher's guidance is the
doubled batch the pipeline builds. `d`, the step size 1/K, only to shortcut students (a graph
input "d", `Manifest.takes_step_size`).
"""

from __future__ import annotations

from typing import Literal, Protocol, get_args, runtime_checkable

import numpy as np
from pydantic import Field, field_validator

from fewstep.config import StrictModel

BackendKind = Literal["onnxruntime", "openvino", "tensorrt", "torch"]
AUTO_CANDIDATES = ("onnxruntime-fp32", "openvino-fp32", "openvino-bf16")
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class BackendError(ValueError):
    """A backend that cannot run here (missing package, no GPU, unsupported precision).

    A ValueError so the CLI reports it as one line, like other configuration errors."""


@runtime_checkable
class Denoiser(Protocol):
    """One evaluation x_hat = D(z, t, text, [w]) over a batch of at most `max_batch` images."""

    max_batch: int

    def __call__(
        self,
        z: np.ndarray,
        t: np.ndarray,
        states: np.ndarray,
        mask: np.ndarray,
        w: np.ndarray | None = None,
        d: np.ndarray | None = None,
    ) -> np.ndarray: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Token ids and mask (B, L) int64 to token states (B, L, D) float32."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class BackendSettings(StrictModel):
    """How to run a bundle's graphs. Chosen per service (and per bundle through `precision`)."""

    kind: BackendKind | Literal["auto"] = Field(
        "onnxruntime",
        description="'auto' times each of `auto_candidates` at start-up and serves the fastest that the "
        "bundle's quality record allows (service.backends.select); any other value pins the backend",
    )
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Precision | Literal["auto"] = Field(
        "auto", description="'auto' uses the bundle's recommended precision for this backend and device"
    )
    threads: int | None = Field(None, ge=1, description="intra-op threads (CPU); None = all cores")
    compile: bool = Field(False, description="torch backend: torch.compile the denoiser")
    engine_cache: str = Field(".cache/trt", description="tensorrt: where built engines are kept")
    max_batch: int = Field(64, ge=1, description="largest denoiser batch (images, guidance halves included)")
    auto_candidates: tuple[str, ...] = Field(
        AUTO_CANDIDATES,
        min_length=1,
        description="kind='auto': the 'backend-precision' paths to time, in order "
        "of preference (a later one must be faster by more than `auto_tolerance` to win)",
    )
    auto_batch_images: int = Field(16, ge=1, le=1024, description="kind='auto': images per timed batch")
    auto_tolerance: float = Field(0.05, ge=0, lt=1, description="kind='auto': speed-up a later candidate needs")

    @field_validator("auto_candidates", mode="after")
    @classmethod
    def _known_paths(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            split_path(name)
        if len(set(names)) != len(names):
            raise ValueError(f"a candidate is listed twice: {list(names)}")
        return names


def split_path(name: str) -> tuple[str, str]:
    """'openvino-bf16' -> ('openvino', 'bf16'); a ValueError naming the choices otherwise."""
    kinds, precisions = get_args(BackendKind), get_args(Precision)
    kind, _, precision = name.rpartition("-")
    if kind not in kinds or precision not in precisions:
        raise ValueError(
            f"{name!r} is not 'backend-precision' with a backend of {kinds} and a precision of {precisions}"
        )
    return kind, precision


def network_inputs(z, t, states, mask, w, d, takes_w: bool, takes_d: bool) -> list[np.ndarray]:
    """The denoiser graph's inputs in declaration order (`fewstep.bundle.denoiser_graph`): z, t,
    states, mask, then w for a student and d for a shortcut student; a missing one is an error."""
    arrays = [z, t, states, mask]
    for name, value, taken in (("the guidance scale w", w, takes_w), ("the step size d", d, takes_d)):
        if taken:
            if value is None:
                raise ValueError(f"this denoiser takes {name}")
            arrays.append(value)
    return arrays


def chunked(fn, max_batch: int, *arrays: np.ndarray | None) -> np.ndarray:
    """Call `fn` on slices of at most `max_batch` rows and concatenate (None arrays pass through)."""
    n = next(a for a in arrays if a is not None).shape[0]
    if n <= max_batch:
        return fn(*arrays)
    parts = [fn(*(None if a is None else a[i : i + max_batch] for a in arrays)) for i in range(0, n, max_batch)]
    return np.concatenate(parts)
