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

from distill.text import NULL_CAPTION, TextEncoder
from fewstep.guidance import doubled_guidance
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
    """Network evaluations per image per sampler step (guidance doubles it for a teacher)."""
    return 1 if model.cfg.guidance_input or w == 1.0 else 2


class GuidedDenoiser:
    """`denoise(z, t, cond: TextCond, w)` returning the (guided) x prediction."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model
        self.evaluations = 0  # images evaluated through the network, guidance included

    def __call__(self, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: Any) -> torch.Tensor:
        if self.model.cfg.guidance_input:
            self.evaluations += z.shape[0]
            return self.model(z, t, cond.states, cond.mask, batch_vector(np.asarray(w, np.float32), z))
        if np.ndim(w) == 0 and float(w) == 1.0:
            self.evaluations += z.shape[0]
            return self.model(z, t, cond.states, cond.mask)
        self.evaluations += 2 * z.shape[0]
        return doubled_guidance(self.model, z, t, (cond.states, cond.mask), (cond.null_states, cond.null_mask), w)
