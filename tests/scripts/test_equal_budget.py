"""scripts/equal_budget.sh with a fake `fewstep`: the probe's rate is the iterations' own (the first,
warm-up window timed at the second's rate), and each run's schedule is sized from it."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE = textwrap.dedent(
    """\
    #!/usr/bin/env python3
    # A fake `fewstep distill`: 20 updates in windows of 4, the first at 0.1 updates/s (warm-up), the
    # rest at 0.5; a summary whose wall time also counts 100 s of overheads.
    import json, sys
    args = sys.argv[1:]
    out = args[args.index("--out") + 1]
    sets = dict(args[i + 1].split("=", 1) for i, x in enumerate(args) if x == "--set")
    with open(sys.argv[0] + ".calls", "a") as f:
        f.write(json.dumps({"method": args[args.index("--method") + 1], "steps": args[args.index("--steps") + 1],
                            "sets": sets, "out": out, "max_minutes": args[args.index("--max-minutes") + 1]}) + "\\n")
    import os
    os.makedirs(out, exist_ok=True)
    n = min(int(sets["iters"]), 20)
    with open(os.path.join(out, "metrics.jsonl"), "w") as f:
        for step in range(4, n + 1, 4):
            f.write(json.dumps({"step": step, "it_s": 0.1 if step == 4 else 0.5}) + "\\n")
    json.dump({"iters": n, "wall_s": 40 + 40 + 100}, open(os.path.join(out, "summary.json"), "w"))
    """
)


def _fake(tmp_path: Path) -> Path:
    fake = tmp_path / "fewstep"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return fake


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "FEWSTEP": str(_fake(tmp_path)), "OUT": str(tmp_path / "out"), "TABLE": "0", **env}
    return subprocess.run(
        ["bash", str(ROOT / "scripts/equal_budget.sh")], env=full, capture_output=True, text=True, timeout=120
    )


def test_the_probe_measures_the_iterations_rate_not_the_runs_overheads(tmp_path):
    r = _run(tmp_path, METHODS="mm-alt pd", KS="8", PROBE_ONLY="1")
    assert r.returncode == 0, r.stderr
    rates = (tmp_path / "out" / "rates-mm-alt-pd-k-8.tsv").read_text().split("\n")
    # 20 updates: the warm-up window at the second window's rate, 40 s in all, i.e. 30 a minute
    # (the summary's wall time, overheads included, would say 6.67).
    assert rates[:2] == ["mm-alt 8 30.0", "pd 8 30.0"]
    calls = [json.loads(line) for line in (tmp_path / "fewstep.calls").read_text().splitlines()]
    assert {c["sets"]["log_every"] for c in calls} == {"4"}
    assert [c["sets"]["iters"] for c in calls if c["method"] == "pd"] == ["48"]  # pd probes all its stages
    assert not list((tmp_path / "out").glob("probe-*"))  # the probes are removed
    assert not list((tmp_path / "out").glob("*-k8"))  # PROBE_ONLY: no run


def test_each_run_gets_rate_times_minutes_updates_and_a_time_box(tmp_path):
    rates = tmp_path / "rates.tsv"
    rates.write_text("mm-alt 4 14.88\npd 4 40.01\n")
    r = _run(tmp_path, RATES=str(rates), MINUTES="45")
    assert r.returncode == 0, r.stderr
    calls = {c["method"]: c for c in map(json.loads, (tmp_path / "fewstep.calls").read_text().splitlines())}
    assert calls["mm-alt"]["sets"]["iters"] == "669" and calls["pd"]["sets"]["iters"] == "1800"
    assert calls["mm-alt"]["max_minutes"] == "51.75" and calls["pd"]["out"].endswith("pd-k4")
