"""FLOP counting against hand counts, and the matmul peak."""

import pytest

torch = pytest.importorskip("torch")

from bench.measure import count_flops, denoiser_flops, matmul_peak, median_time  # noqa: E402


def test_conv_and_linear_match_hand_count():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    lin = torch.nn.Linear(16, 4)
    x = torch.randn(2, 3, 8, 8)
    y = torch.randn(5, 16)
    total, per_op = count_flops(lambda: (conv(x), lin(y)))
    conv_flops = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)  # 2 x outputs x MACs per output
    lin_flops = 2 * 5 * 16 * 4
    assert per_op["convolution"] == conv_flops
    assert per_op["addmm"] == lin_flops
    assert total == conv_flops + lin_flops


def test_cpu_attention_is_counted():
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 6, 8), torch.randn(1, 2, 6, 8)
    total, _ = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert total == 2 * (2 * 2 * 4 * 6 * 8)  # q k^T and attn v, 2 FLOPs per multiply-add


def test_denoiser_flops_per_image_is_batch_independent():
    from fewstep.config import UNetConfig
    from fewstep.networks import build_denoiser

    cfg = UNetConfig(resolution=16, base_channels=16, channel_mults=(1, 2), num_res_blocks=1, text_dim=32)
    model = build_denoiser(cfg).eval()
    one = denoiser_flops(model, 1, 3, 16, 8, 32)
    three = denoiser_flops(model, 3, 3, 16, 8, 32)
    assert one["per_image"] == pytest.approx(three["per_image"])
    assert one["per_op_per_image"]["convolution"] > 0


def test_matmul_peak():
    assert matmul_peak("fp32", 64, repeats=1) > 0
    assert matmul_peak("bf16", 64, repeats=1) > 0


def test_median_time_is_the_median_of_the_timed_calls_after_the_warm_up(monkeypatch):
    """On a fake clock: the warm-up call (1 s) is not timed, and of 0.5, 0.1 and 0.3 s the median is kept."""
    import bench.measure as measure

    now = [0.0]
    durations = iter([1.0, 0.5, 0.1, 0.3])
    monkeypatch.setattr(measure.time, "perf_counter", lambda: now[0])

    def call() -> None:
        now[0] += next(durations)

    assert median_time(call, repeats=3, warmup=1) == pytest.approx(0.3)
