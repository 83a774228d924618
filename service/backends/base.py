"""The backend protocols every serving backend implements, and how a bundle picks one.

A backend runs *one network evaluation* over a batch, numpy in and numpy out; it knows nothing of
samplers, guidance or seeds. The k-step loop is the shared `fewstep.sampler` for every backend
(`service/pipeline.py`), so backends differ only in how fast and how exactly they evaluate.

Shapes (B = batch, L = max_tokens, D = text hidden size, C/R = channels/resolution):

    denoiser(z (B,C,R,R) f32, t (B,) f32, states (B,L,D) f32, mask (B,L) i64, w (B,) f32 | None)
        -> x_hat (B,C,R,R) f32
    text_encoder(input_ids (B,L) i64, attention_mask (B,L) i64) -> states (B,L,D) f32

`w` is passed only to students (`manifest.guidance.network_input`); a teacher's guidance is the
doubled batch the pipeline builds.
"""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from fewstep.config import StrictModel

BackendKind = Literal["onnxruntime", "tensorrt", "torch"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class BackendError(ValueError):
    """A backend that cannot run here (missing package, no GPU, unsupported precision).

    A ValueError so the CLI reports it as one line, like other configuration errors."""


@runtime_checkable
class Denoiser(Protocol):
    """One evaluation x_hat = D(z, t, text, [w]) over a batch of at most `max_batch` images."""

    max_batch: int

    def __call__(
        self, z: np.ndarray, t: np.ndarray, states: np.ndarray, mask: np.ndarray, w: np.ndarray | None = None
    ) -> np.ndarray: ...


@runtime_checkable
class TextEncoder(Protocol):
    """Token ids and mask (B, L) int64 to token states (B, L, D) float32."""

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


class BackendSettings(StrictModel):
    """How to run a bundle's graphs. Chosen per service (and per bundle through `precision`)."""

    kind: BackendKind = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Precision | Literal["auto"] = Field(
        "auto", description="'auto' uses the bundle's recommended precision for this backend and device"
    )
    threads: int | None = Field(None, ge=1, description="intra-op threads (CPU); None = all cores")
    compile: bool = Field(False, description="torch backend: torch.compile the denoiser")
    engine_cache: str = Field(".cache/trt", description="tensorrt: where built engines are kept")
    max_batch: int = Field(64, ge=1, description="largest denoiser batch (images, guidance halves included)")


def chunked(fn, max_batch: int, *arrays: np.ndarray | None) -> np.ndarray:
    """Call `fn` on slices of at most `max_batch` rows and concatenate (None arrays pass through)."""
    n = next(a for a in arrays if a is not None).shape[0]
    if n <= max_batch:
        return fn(*arrays)
    parts = [fn(*(None if a is None else a[i : i + max_batch] for a in arrays)) for i in range(0, n, max_batch)]
    return np.concatenate(parts)
