"""Binding a torch network to the sampler (distill.kit.guidance): guidance as one doubled batch for a
teacher, w as an input for a student, and the evaluations each costs."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from distill.kit.guidance import GuidedDenoiser, TextCond, encode_cond, guided, nfe_per_step
from tests.distill.methods.test_student import _inputs, _teacher


class Net:
    """A row-wise network: x = z/2 + text mean (+ w/10 for a student); records its batch sizes."""

    def __init__(self, guidance_input: bool) -> None:
        self.cfg = SimpleNamespace(guidance_input=guidance_input)
        self.sizes: list[int] = []

    def __call__(self, z, t, states, mask, w=None):
        self.sizes.append(z.shape[0])
        text = (states * mask[..., None]).sum((1, 2)) / mask.sum(1).clamp(min=1)
        x = z / 2 + text.view(-1, 1, 1, 1) * (1 - t.view(-1, 1, 1, 1))
        return x if w is None else x + w.view(-1, 1, 1, 1) / 10


def cond(b: int = 3) -> tuple[torch.Tensor, torch.Tensor, TextCond]:
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(b, 2, 4, 4, generator=g), torch.rand(b, generator=g)
    mask = torch.ones(b, 5)
    return z, t, TextCond(torch.randn(b, 5, 6, generator=g), mask, torch.randn(b, 5, 6, generator=g), mask)


def test_a_teacher_is_guided_in_one_doubled_batch_and_counts_two_evaluations_per_image():
    net = Net(guidance_input=False)
    den = GuidedDenoiser(net)
    z, t, c = cond()
    out = den(z, t, c, 3.0)
    assert net.sizes == [6] and den.evaluations == 6
    x_c, x_n = net(z, t, c.states, c.mask), net(z, t, c.null_states, c.null_mask)
    torch.testing.assert_close(out, x_n + 3.0 * (x_c - x_n))


def test_w_one_is_the_conditional_prediction_in_one_evaluation():
    net = Net(guidance_input=False)
    den = GuidedDenoiser(net)
    z, t, c = cond()
    torch.testing.assert_close(den(z, t, c, 1.0), net(z, t, c.states, c.mask))
    assert net.sizes[0] == 3 and den.evaluations == 3


def test_a_student_takes_w_as_an_input_per_image():
    net = Net(guidance_input=True)
    den = GuidedDenoiser(net)
    z, t, c = cond()
    out = den(z, t, c, [1.0, 2.0, 3.0])
    assert net.sizes == [3] and den.evaluations == 3
    plain = net(z, t, c.states, c.mask)
    torch.testing.assert_close(out - plain, torch.tensor([0.1, 0.2, 0.3]).view(-1, 1, 1, 1).expand_as(out))


def test_evaluations_per_step():
    assert nfe_per_step(Net(guidance_input=False), 3.0) == 2
    assert nfe_per_step(Net(guidance_input=False), 1.0) == 1
    assert nfe_per_step(Net(guidance_input=True), 3.0) == 1


def test_guidance_steers_from_the_negative_prompts_when_given():
    calls = []

    class Encoder:
        def encode(self, captions):
            calls.append(list(captions))
            return torch.zeros(len(captions), 2, 3), torch.ones(len(captions), 2)

    encode_cond(Encoder(), ["a red circle", "a blue square"])
    encode_cond(Encoder(), ["a red circle"], negative=["a green cross"])
    from distill.kit.text import NULL_CAPTION

    assert calls == [["a red circle", "a blue square"], [NULL_CAPTION] * 2, ["a red circle"], ["a green cross"]]


def test_guided_is_one_doubled_batch_combined_per_example():
    teacher = _teacher()
    z, t, cond = _inputs()
    w = torch.tensor([1.0, 2.0, 5.0])
    calls = []

    def call(*args):
        calls.append(args[0].shape[0])
        return teacher(*args)

    with torch.no_grad():
        x = guided(call, z, t, cond, w)
        x_cond = teacher(z, t, cond.states, cond.mask)
        x_null = teacher(z, t, cond.null_states, cond.null_mask)
    assert calls == [6]
    torch.testing.assert_close(x, x_null + w.view(-1, 1, 1, 1) * (x_cond - x_null), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x[0], x_cond[0], rtol=1e-4, atol=1e-5)
