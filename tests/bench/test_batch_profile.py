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


def test_the_report_says_how_many_starts_measured_and_how_many_reused_the_tuning_cache():
    runs = [{**_start(16, 0.5, 360.0), "reused": r} for r in (False, True, True)]
    doc = {
        "model": "m",
        "backend": "auto",
        "budget_s": 5.0,
        "tuning_cache": "t.json",
        "runs": runs,
        "spread": spread(runs),
    }
    text = markdown(doc)
    assert "tuning cache: 1 start(s) measured, 2 reused" in text and "(stable)" in text
    assert "no tuning cache" in markdown({**doc, "tuning_cache": None})
