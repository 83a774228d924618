"""What every distillation method starts from: the student as a copy of the teacher that also
takes w, and the frozen teacher's classifier-free guided prediction at per-example w.

Shared by the moment-matching runner (`distill.distiller`) and the baselines (`distill.baseline`:
pd and cd), so the methods compare on equal terms; neither imports the other.
"""

from __future__ import annotations

import torch

from distill.config import ConfigError
from distill.denoise import TextCond
from fewstep.guidance import doubled_guidance
from fewstep.networks import Denoiser, build_denoiser


def make_student(teacher: Denoiser, seed: int = 0) -> Denoiser:
    """A copy of the teacher that also takes w (its w embedding's output layer zero-initialised;
    its hidden layer drawn from `seed`, so runs are reproducible)."""
    cfg = teacher.cfg.model_copy(update={"guidance_input": True})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_denoiser(cfg).to(next(teacher.parameters()).device)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(".w_mlp." not in f".{k}" for k in missing):
        raise ConfigError(f"teacher and student differ beyond the guidance input: {missing} {unexpected}")
    return student.train().requires_grad_(True)


def guided(call, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance with per-example w around any forward `call(z, t, states, mask)`."""
    return doubled_guidance(call, z, t, (cond.states, cond.mask), (cond.null_states, cond.null_mask), w)
