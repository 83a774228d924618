import numpy as np
import torch

from fewstep.config import UNetConfig
from fewstep.networks import alpha_sigma_torch, build_denoiser
from fewstep.schedule import alpha_sigma

CFG = UNetConfig(
    resolution=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
    cross_attn_resolutions=(8,), self_attn_resolutions=(8,), heads=2, text_dim=12,
)  # fmt: skip


def test_torch_schedule_matches_numpy():
    t = np.linspace(0, 1, 101)
    a, s = alpha_sigma(t)
    at, st = alpha_sigma_torch(torch.tensor(t, dtype=torch.float64))
    np.testing.assert_allclose(at.numpy(), a, atol=1e-12)
    np.testing.assert_allclose(st.numpy(), s, atol=1e-12)


def _inputs(b=3):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(b, 3, 16, 16, generator=g)
    t = torch.rand(b, generator=g)
    states = torch.randn(b, 5, 12, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0]] * b, dtype=torch.bool)
    return z, t, states, mask


def test_unet_shapes_and_text_dependence():
    torch.manual_seed(0)
    den = build_denoiser(CFG)
    for p in den.parameters():  # break the zero-inits so outputs depend on everything
        p.data.add_(0.05 * torch.randn_like(p))
    z, t, states, mask = _inputs()
    out = den(z, t, states, mask)
    assert out.shape == z.shape
    other = den(z, t, states + 1.0, mask)
    assert (out - other).abs().max() > 1e-4
    # masked tokens are ignored
    padded = states.clone()
    padded[:, 3:] = 100.0
    torch.testing.assert_close(den(z, t, padded, mask), out)


def test_v_prediction_gives_x_via_schedule():
    den = build_denoiser(CFG)
    z, t, states, mask = _inputs()
    v = den.net(z, t, states, mask)
    a, s = (x[:, None, None, None] for x in alpha_sigma_torch(t))
    torch.testing.assert_close(den(z, t, states, mask), a * z - s * v)


def test_guidance_input_starts_equal_to_teacher():
    torch.manual_seed(1)
    teacher = build_denoiser(CFG)
    for p in teacher.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    student = build_denoiser(CFG.model_copy(update={"guidance_input": True}))
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("net.w_mlp") for k in missing)
    z, t, states, mask = _inputs()
    for w in (0.0, 2.0, 7.5):
        torch.testing.assert_close(student(z, t, states, mask, torch.full((3,), w)), teacher(z, t, states, mask))
