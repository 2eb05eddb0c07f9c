"""Training curves: one panel per metric of a Keras CSVLogger history, train vs validation, and the epoch whose
weights Train keeps. No TensorFlow; matplotlib only when plotting (the model health check imports `best_epoch`
on paths that must start fast)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def plot_training_curves(history_csv: Path, path: Path) -> Path:
    """One panel per metric in a Keras CSVLogger file (loss, accuracy, ...), train vs ``val_`` lines."""
    from tasks.runtime.figures import plt, save_figure

    columns = _read_history(history_csv)
    epochs = columns.pop("epoch", None)
    names = [name for name in columns if not name.startswith("val_")]
    names += [name[4:] for name in columns if name.startswith("val_") and name[4:] not in columns]
    if not names:
        raise ValueError(f"{history_csv}: no metric columns")
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    best = best_epoch(columns.get("val_loss", []))
    try:
        for ax, name in zip(axes[0], names, strict=True):
            _plot_metric(ax, name, columns, epochs)
            if best is not None:
                ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best})")
                ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def best_epoch(val_losses: Sequence[float]) -> int | None:
    """The 1-based epoch of the lowest finite validation loss (the weights Train keeps), or None."""
    finite = [(loss, index) for index, loss in enumerate(val_losses) if math.isfinite(loss)]
    return min(finite)[1] + 1 if finite else None


def _read_history(history_csv: Path) -> dict[str, list[float]]:
    with Path(history_csv).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{history_csv}: no epochs recorded")
    return {name: [_to_float(row.get(name)) for row in rows] for name in rows[0] if name}


def _to_float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _plot_metric(ax: Any, name: str, columns: dict[str, list[float]], epochs: list[float] | None) -> None:
    for key, label in ((name, "train"), (f"val_{name}", "val")):
        if key in columns:
            values = columns[key]
            xs = [int(e) + 1 for e in epochs] if epochs else list(range(1, len(values) + 1))
            ax.plot(xs, values, marker="o", markersize=3, label=label)
    ax.set_title(name)
    ax.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    ax.legend()
