"""How the denoiser is lowered to ONNX: the *recipe*, versioned so a committed graph of an older
recipe is re-exported instead of reused (`distill.export.bundle.denoiser_onnx` keys its sidecar on it).

Recipe 1 (the original): opset 20, torch's default lowering. Attention came out as a decomposed
SDPA (MatMul, Softmax, Transpose and a Where/IsNaN pattern for fully-masked rows) and GroupNorm as
Reshape -> InstanceNormalization -> Reshape -> Mul -> Add.

Recipe 2: opset 23, with two translations of our own (`torch.onnx.export(custom_translation_table=)`):

- `scaled_dot_product_attention` -> one ONNX `Attention` op (opset 23). ONNX Runtime's CPU
  provider has a kernel for it, and so does OpenVINO; the Where/IsNaN/Softmax glue goes away. The
  text mask (B, 1, 1, L) is expanded to (B, 1, S_q, L) first, because ONNX Runtime's CPU kernel
  (1.32) checks that the mask's query axis equals the query length instead of broadcasting it.
- `group_norm` -> either the InstanceNormalization pattern (`"instance"`, the default) or one ONNX
  `GroupNormalization` op (opset 21, `"onnx"`). The default is the pattern because ONNX Runtime's
  CPU provider (1.32) has no kernel for GroupNormalization: it inlines the op's function body
  (ReduceMean, Sub, Mul, Sqrt, Div, Cast, ... per GroupNorm), which turned the 803-node graph into
  1,585 nodes after ORT's optimiser against 803 with the pattern (measured here). OpenVINO runs
  either form as one kernel (MVN, or its GroupNormalization).

Numerics: the translations compute what torch computes (fp32, same eps, masked keys excluded), so
the export-time parity bound (`distill.export.bundle.PARITY_TOL`) is unchanged; the torch model itself is
untouched (`fewstep.networks` has no export mode to keep in step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GroupNormForm = Literal["instance", "onnx"]


@dataclass(frozen=True)
class Recipe:
    """One way of lowering the denoiser; `key` goes into the committed graph's sidecar."""

    version: int
    opset: int | None  # None: the exporter's default
    group_norm: GroupNormForm = "instance"
    fused_attention: bool = False

    @property
    def key(self) -> str:
        if self.version == 1:
            return "1"
        attention = "fused" if self.fused_attention else "sdpa"
        return f"{self.version}-opset{self.opset}-gn:{self.group_norm}-attn:{attention}"


LEGACY = Recipe(version=1, opset=None)
CURRENT = Recipe(version=2, opset=23, group_norm="instance", fused_attention=True)


def recipe(group_norm: GroupNormForm = "instance", legacy: bool = False) -> Recipe:
    """The current recipe (or the legacy one, for side-by-side benchmarks)."""
    if legacy:
        return LEGACY
    if group_norm not in ("instance", "onnx"):
        raise ValueError(f"group_norm must be 'instance' or 'onnx', not {group_norm!r}")
    return Recipe(version=2, opset=23, group_norm=group_norm, fused_attention=True)


def translation_table(r: Recipe) -> dict[Callable, Callable] | None:
    """`custom_translation_table` for `torch.onnx.export` (None: the exporter's defaults)."""
    if r.version == 1:
        return None
    import torch
    from onnxscript import opset23 as op

    aten = torch.ops.aten

    def group_norm_instance(input, num_groups: int, weight=None, bias=None, eps: float = 1e-05, cudnn_enabled=True):
        # (B, C, H, W) -> (B, G, C/G * H * W), normalised per group, back, then the per-channel affine.
        shape = op.Shape(input)
        grouped = op.Reshape(input, op.Constant(value_ints=[0, num_groups, -1]))
        ones = op.Expand(op.CastLike(op.Constant(value_float=1.0), input), op.Constant(value_ints=[num_groups]))
        zeros = op.Expand(op.CastLike(op.Constant(value_float=0.0), input), op.Constant(value_ints=[num_groups]))
        norm = op.Reshape(op.InstanceNormalization(grouped, ones, zeros, epsilon=eps), shape)
        axes = op.Constant(value_ints=[1, 2])  # (C,) -> (C, 1, 1); GroupNorm here is always over 4-D maps
        if weight is not None:
            norm = op.Mul(norm, op.Unsqueeze(weight, axes))
        if bias is not None:
            norm = op.Add(norm, op.Unsqueeze(bias, axes))
        return norm

    def group_norm_onnx(input, num_groups: int, weight=None, bias=None, eps: float = 1e-05, cudnn_enabled=True):
        channels = op.Shape(input, start=1, end=2)
        if weight is None:
            weight = op.Expand(op.CastLike(op.Constant(value_float=1.0), input), channels)
        if bias is None:
            bias = op.Expand(op.CastLike(op.Constant(value_float=0.0), input), channels)
        return op.GroupNormalization(input, weight, bias, epsilon=eps, num_groups=num_groups)

    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        if dropout_p != 0.0 or is_causal or enable_gqa:
            raise NotImplementedError("the export recipe lowers only plain (non-causal, no dropout) attention")
        if attn_mask is not None:
            # (B, 1, 1, L) -> (B, 1, S_q, L): ORT's CPU kernel wants the query axis spelled out.
            target = op.Concat(
                op.Constant(value_ints=[1, 1]), op.Shape(query, start=2, end=3), op.Constant(value_ints=[1]), axis=0
            )
            attn_mask = op.Expand(attn_mask, target)
        y, _, _, _ = op.Attention(query, key, value, attn_mask=attn_mask, scale=scale)
        return y

    table: dict[Callable, Callable] = {
        aten.group_norm.default: group_norm_onnx if r.group_norm == "onnx" else group_norm_instance,
    }
    if r.fused_attention:
        table[aten.scaled_dot_product_attention.default] = attention
    return table
