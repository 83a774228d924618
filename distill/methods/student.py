"""What every distillation method starts from: the student as a copy of the teacher that also
takes w (the guided teacher it is distilled toward is `distill.kit.guidance.guided`).

Shared by the moment-matching runs and the baselines (pd and cd), so the methods compare on equal
terms; neither imports the other.
"""

from __future__ import annotations

import torch

from distill.kit.config import ConfigError
from fewstep.networks import Denoiser, build_denoiser


def make_student(teacher: Denoiser, seed: int = 0, step_size_input: bool = False) -> Denoiser:
    """A copy of the teacher that also takes w (its w embedding's output layer zero-initialised;
    its hidden layer drawn from `seed`, so runs are reproducible) and, for a shortcut student
    (`step_size_input`), the sampler's step size d, embedded the same way."""
    cfg = teacher.cfg.model_copy(update={"guidance_input": True, "step_size_input": step_size_input})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_denoiser(cfg).to(next(teacher.parameters()).device)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(".w_mlp." not in f".{k}" and ".d_mlp." not in f".{k}" for k in missing):
        raise ConfigError(f"teacher and student differ beyond the guidance input: {missing} {unexpected}")
    return student.train().requires_grad_(True)
