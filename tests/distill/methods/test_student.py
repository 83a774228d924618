"""What every distillation method starts from: the student is the teacher plus a zero-initialised
guidance input (reproducible from its seed), and the guided teacher combines the conditional and
null halves of one doubled batch at per-example w."""

import pytest
import torch

from distill.kit.config import ConfigError
from distill.kit.guidance import TextCond
from distill.methods.student import make_student
from fewstep.config import UNetConfig
from fewstep.networks import build_denoiser

CFG = UNetConfig(
    resolution=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
    cross_attn_resolutions=(8,), self_attn_resolutions=(8,), heads=2, text_dim=12,
)  # fmt: skip


def _teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_denoiser(CFG).eval()


def _inputs(b=3):
    g = torch.Generator().manual_seed(1)
    z, t = torch.randn(b, 3, 16, 16, generator=g), torch.rand(b, generator=g)
    states, null = torch.randn(b, 5, 12, generator=g), torch.randn(b, 5, 12, generator=g)
    mask = torch.ones(b, 5, dtype=torch.bool)
    return z, t, TextCond(states, mask, null, mask)


def test_the_student_starts_as_the_teacher_at_every_w():
    teacher = _teacher()
    student = make_student(teacher, seed=3).eval()
    assert student.cfg.guidance_input and student.training is False
    z, t, cond = _inputs()
    with torch.no_grad():
        ref = teacher(z, t, cond.states, cond.mask)
        for w in (1.0, 4.0):
            torch.testing.assert_close(student(z, t, cond.states, cond.mask, torch.full((3,), w)), ref)
    again = make_student(teacher, seed=3).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in student.state_dict().items())


def test_a_teacher_that_differs_beyond_the_guidance_input_is_refused():
    with pytest.raises(ConfigError, match="beyond the guidance input"):
        make_student(_StrippedTeacher(_teacher()))


class _StrippedTeacher(torch.nn.Module):
    """A teacher whose state lacks one layer (as if the architectures differed)."""

    def __init__(self, teacher):
        super().__init__()
        self.cfg, self.inner = teacher.cfg, teacher

    def state_dict(self, *args, **kwargs):
        sd = self.inner.state_dict(*args, **kwargs)
        sd.pop(next(iter(sd)))
        return sd
