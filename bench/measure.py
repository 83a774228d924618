"""What the machine can do and what the network costs: matmul peaks, FLOP counts, median timings.

- `matmul_peak`: GFLOP/s of a square torch matmul (fp32 or bf16), median of repeats after a
  warm-up; the benchmark measures it at the start and end of a run and reports both, so the
  fractions it quotes come from the same machine state as the timings.
- `count_flops`: `torch.utils.flop_counter.FlopCounterMode` over one forward, with a formula for
  the CPU flash-attention kernel that the counter does not register (without it, attention is
  silently left out). Only matrix products count (conv, linear, attention matmuls): norms,
  activations and elementwise ops are memory traffic, not FLOPs, in the usual convention.
- `median_time`: median seconds of repeated calls, warm-up excluded.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_mapping() -> dict[Any, Callable]:
    """Extra formulas for ops FlopCounterMode leaves at zero on this torch build."""
    import torch

    extra = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        extra[op] = _sdpa_cpu_flops  # FlopCounterMode looks formulas up by overload packet
    return extra


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """(total FLOPs, FLOPs per aten op) of one call of `fn` (multiply-add = 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=flop_mapping()) as counter, torch.inference_mode():
        fn()
    per_op = {str(k).removeprefix("aten."): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def denoiser_flops(model, batch: int, channels: int, resolution: int, tokens: int, text_dim: int) -> dict[str, Any]:
    """FLOPs of one network evaluation per image of a `fewstep.networks.Denoiser` (CPU, fp32)."""
    import torch

    g = torch.Generator().manual_seed(0)
    z = torch.randn(batch, channels, resolution, resolution, generator=g)
    t = torch.rand(batch, generator=g)
    states = torch.randn(batch, tokens, text_dim, generator=g)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    mask[:, tokens // 2 :] = False
    w = torch.full((batch,), 3.0) if model.cfg.guidance_input else None
    total, per_op = count_flops(lambda: model(z, t, states, mask, w))
    return {"per_image": total / batch, "per_op_per_image": {k: v / batch for k, v in per_op.items()}}


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(dtype: str = "fp32", n: int = 2048, repeats: int = 7, device: str = "cpu") -> float:
    """Median GFLOP/s of an n x n @ n x n torch matmul in `dtype` ('fp32', 'bf16' or 'fp16')."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dt)

    def run():
        c = a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        return c

    with torch.inference_mode():
        seconds = median_time(run, repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9
