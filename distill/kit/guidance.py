"""Bind a torch `Denoiser` and a text encoder to the sampler's `denoise(z, t, cond, w)` callable.

Classifier-free guidance for a teacher runs the conditional and null-text halves in one doubled
batch through `fewstep.guidance.doubled_guidance` (the one home of that evaluation and its combine).
A network with a guidance input (a student) takes w directly: one evaluation, no doubled batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from distill.kit.text import NULL_CAPTION, TextEncoder
from fewstep.guidance import doubled_guidance, evaluations_per_image_step, guided_call
from fewstep.networks import Denoiser
from fewstep.sampler import batch_vector


@dataclass
class TextCond:
    states: torch.Tensor
    mask: torch.Tensor
    null_states: torch.Tensor
    null_mask: torch.Tensor


def encode_cond(encoder: TextEncoder, captions: list[str], negative: list[str] | None = None) -> TextCond:
    """Text states for the prompts and for the null (or negative) prompts used by guidance."""
    states, mask = encoder.encode(captions)
    null_states, null_mask = encoder.encode(negative or [NULL_CAPTION] * len(captions))
    return TextCond(states, mask, null_states, null_mask)


def nfe_per_step(model: Denoiser, w: float) -> int:
    """Network evaluations per image per sampler step (`fewstep.guidance.evaluations_per_image_step`)."""
    return evaluations_per_image_step(model.cfg.guidance_input, w)


def guided(call, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance with per-example w around any forward `call(z, t, states, mask)`,
    every row guided (a distillation target: w is drawn from a range and never exactly 1)."""
    return doubled_guidance(call, z, t, (cond.states, cond.mask), (cond.null_states, cond.null_mask), w)


class GuidedDenoiser:
    """`denoise(z, t, cond: TextCond, w)` returning the (guided) x prediction.

    A shortcut student (`cfg.step_size_input`) also takes the step size d of the sampler it runs
    in: `GuidedDenoiser(model, steps=K)` feeds d = 1/K (the uniform K-step grid) with every call,
    so the sampler's loop and its per-step update stay the one in `fewstep.sampler`."""

    def __init__(self, model: Denoiser, steps: int | None = None) -> None:
        self.model = model
        self.evaluations = 0  # images evaluated through the network, guidance included
        self.step_size = None
        if getattr(model.cfg, "step_size_input", False):  # test doubles may carry guidance_input only
            if steps is None:
                raise ValueError("a shortcut student samples at a given K: GuidedDenoiser(model, steps=K)")
            self.step_size = 1.0 / steps

    def __call__(self, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: Any) -> torch.Tensor:
        n, network_input = z.shape[0], self.model.cfg.guidance_input
        guided_rows = 0 if network_input else int(np.count_nonzero(np.broadcast_to(np.asarray(w) != 1.0, (n,))))
        self.evaluations += n + guided_rows
        w_in = batch_vector(np.asarray(w, np.float32), z) if network_input else w
        null = None if network_input or not guided_rows else (cond.null_states, cond.null_mask)
        call = self.model
        if self.step_size is not None:
            d = batch_vector(np.float32(self.step_size), z)

            def call(z, t, states, mask, w=None):
                return self.model(z, t, states, mask, w, d)

        return guided_call(call, z, t, (cond.states, cond.mask), null, w_in, network_input)
