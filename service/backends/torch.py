"""torch backend (optional: needs torch, i.e. the distill extra): eager or `torch.compile`, fp32 or bf16.

It loads the bundle's `torch/` weights into `fewstep.networks` (the same module training used),
so it is also the reference the ONNX graphs are checked against. bf16 runs under autocast
(matrix multiplies and convolutions in bf16, reductions in fp32): on this CPU bf16 matrix products
run about 2.8x faster than fp32; its image-quality cost is measured by the evaluator before a
bundle recommends it (`manifest.precision`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from fewstep.bundle import GraphSpec
from service.backends.base import BackendError, BackendSettings

TORCH_DIR = "torch"


class TorchDenoiser:
    def __init__(self, bundle: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        # OpenMP workers that spin between calls made torch 5-15x slower on a shared CPU
        # (BENCHMARKS.md); ONNX Runtime sessions already sleep. Effective if torch is not loaded yet.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import torch
            from safetensors.torch import load_file
        except ImportError:
            raise BackendError("backend 'torch' needs torch and safetensors (pip install 'fewstep[distill]')") from None
        from fewstep.config import UNetConfig
        from fewstep.networks import build_denoiser

        if settings.precision not in ("fp32", "bf16", "fp16"):
            raise BackendError(f"backend 'torch' runs fp32, bf16 or fp16, not {settings.precision}")
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("backend 'torch' on device 'cuda': CUDA is not available")
        if settings.threads and settings.device == "cpu":
            torch.set_num_threads(settings.threads)
        self.torch = torch
        self.device = torch.device(settings.device)
        cfg = UNetConfig.model_validate(json.loads((bundle / TORCH_DIR / "unet.json").read_text()))
        model = build_denoiser(cfg)
        model.load_state_dict(load_file(bundle / TORCH_DIR / "model.safetensors"))
        model = model.to(self.device).eval().requires_grad_(False)
        if settings.device == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = torch.compile(model, dynamic=True) if settings.compile else model
        self.takes_w = cfg.guidance_input
        self.takes_d = cfg.step_size_input
        self.max_batch = min(settings.max_batch, spec.max_batch)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        self.precision = settings.precision

    def __call__(self, z, t, states, mask, w=None, d=None) -> np.ndarray:
        torch = self.torch
        dev = self.device

        def tensor(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a)).to(dev, non_blocking=True)

        with torch.inference_mode(), self.autocast:
            x = self.model(
                tensor(z),
                tensor(t),
                tensor(states),
                tensor(mask).bool(),
                tensor(w) if self.takes_w and w is not None else None,
                tensor(d) if self.takes_d and d is not None else None,
            )
        return x.float().cpu().numpy()
