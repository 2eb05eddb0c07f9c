"""Matplotlib on its file-only backend (Agg), chosen before pyplot is imported, and PNG saving. No TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

DPI = 100


def save_figure(fig: Any, path: Path) -> Path:
    """``fig`` as a PNG at ``path`` (its folder made); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def show_image(ax: Any, image: Any) -> None:
    """uint8 pixels on ``ax``: one channel (HxW or HxWx1) in grey on the full 0-255 range, else as colours."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(image)


__all__ = ["plt", "save_figure", "show_image"]
