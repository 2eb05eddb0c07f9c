"""Matplotlib on its file-only backend (Agg), chosen before pyplot is imported, and PNG saving. No TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

DPI = 100


def save_figure(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (its folder made); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


__all__ = ["plt", "save_figure"]
