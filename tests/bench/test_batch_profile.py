"""`fewstep bench batch-profile`: the spread summary of repeated starts (pure; the starts
themselves are real processes the lead runs on a quiet machine)."""

from bench.batch_profile import markdown, spread


def _start(knee: int, s16: float, rss: float) -> dict:
    return {
        "max_batch_images": knee,
        "max_wait_s": 0.0,
        "seconds": {"1": 0.05, "16": s16},
        "profile_s": 2.0,
        "max_rss_mb": rss,
    }


def test_spread_counts_choices_and_ranges():
    s = spread([_start(16, 0.50, 360.0), _start(16, 0.55, 370.0), _start(32, 0.52, 650.0)])
    assert s["max_batch_images"] == {16: 2, 32: 1} and not s["stable"]
    assert s["max_rss_mb_range"] == [360.0, 650.0]
    assert s["images_per_s"]["16"]["max"] == 32.0 and s["images_per_s"]["16"]["n"] == 3
    assert spread([_start(16, 0.5, 1.0)] * 3)["stable"]
    doc = {"model": "m", "backend": "onnxruntime", "budget_s": 5.0, "spread": s}
    assert "NOT stable" in markdown(doc) and "| 16 |" in markdown(doc)
