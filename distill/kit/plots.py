"""Plots people look at: the training loss curve, and the row of panels the reports' figures share."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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


@contextmanager
def panel_figure(png: str | Path, xlabel: str, ylabels: Sequence[str]) -> Iterator[list[Axes]]:
    """A row of panels over one x axis, one per y label, written to `png` when the block ends.

    The block draws each panel's lines (labelled, for the legend); the rest is the one layout the
    reports' figures of several panels share, so they read alike: 13 x 4 inches, the axes labelled
    and gridded, the legend in the first panel (the lines are the same in every panel), 100 dpi.
    matplotlib is imported here, not at the top, so the reports load without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ylabels), figsize=(13, 4))
    try:
        yield list(axes)
        for ax, label in zip(axes, ylabels, strict=True):
            ax.set_xlabel(xlabel)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
    finally:
        plt.close(fig)
