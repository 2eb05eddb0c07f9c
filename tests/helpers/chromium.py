"""Render an HTML report in headless Chromium (a screenshot), as a person would look at it. Tests skip when no
Chromium is installed (``apt-get install -y chromium``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium on this machine (apt-get install -y chromium)")


def screenshot(page: Path, picture: Path, *, width: int = 1200, height: int = 2400,
               timeout_s: float = 60) -> np.ndarray:
    """``page`` rendered to ``picture`` (PNG); its pixels, RGB."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--screenshot={picture}", Path(page).resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert picture.is_file(), f"Chromium wrote no screenshot: {done.stderr[-1500:]}"
    return np.asarray(Image.open(picture).convert("RGB"))


def drawn_rows(pixels: np.ndarray) -> int:
    """How many rows of the screenshot hold anything but the white page."""
    return int(np.count_nonzero((pixels < 245).any(axis=(1, 2))))
