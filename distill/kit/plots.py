"""Plots people look at: the training loss curve."""

from __future__ import annotations

import json
from pathlib import Path


def plot_loss(
    metrics_path: str | Path, out: str | Path, key: str = "loss", label: str = "v-prediction MSE"
) -> Path | None:
    """`key` (default the loss) against step from metrics.jsonl (log scale), as a PNG."""
    path = Path(metrics_path)
    if not path.exists():
        return None
    # Rows without the key (e.g. a guided warm start's, before moment matching's gap exists) are left out.
    rows = [row for r in path.read_text().splitlines() if r.strip() and key in (row := json.loads(r))]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in rows], [r[key] for r in rows])
    ax.set_xlabel("step")
    ax.set_ylabel(label)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
