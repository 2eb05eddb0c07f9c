"""Report plots draw every class name: CJK through an installed font, else as code points, never as boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib import font_manager

from tasks.evaluation import plot_text
from tasks.evaluation.plot_text import drawable_code_points, drawable_label, use_installed_cjk_fonts
from tasks.evaluation.report import plot_confusion_matrix, plot_misclassified_grid

CJK_NAMES = ["中", "国", "字"]


def test_latin_is_kept_and_undrawable_characters_become_code_points() -> None:
    points = drawable_code_points()
    assert ord("A") in points and drawable_label("cat 7") == "cat 7"
    expected = "中" if ord("中") in points else "U+4E2D"
    assert drawable_label("中a") == f"{expected}a"
    missing = [char for char in "\ue000\U0001fae0\U00020000" if ord(char) not in points]
    assert missing, "every candidate is drawable: pick another code point for this test"
    assert drawable_label(f"x{missing[0]}") == f"xU+{ord(missing[0]):04X}"


def test_cjk_class_names_plot_without_missing_glyphs(tmp_path: Path) -> None:
    confusion = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 4]])
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot_confusion_matrix(confusion, CJK_NAMES, tmp_path / "confusion.png")
        plot_misclassified_grid(images, np.array([0, 1, 2]), np.array([1, 2, 0]), CJK_NAMES, tmp_path / "grid.png")
    assert not [w for w in caught if "Glyph" in str(w.message)]
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "grid.png").stat().st_size > 0


def test_an_installed_cjk_font_becomes_a_fallback_family(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = font_manager.FontEntry(fname="/nonexistent/NotoSansCJK.ttc", name="Noto Sans CJK SC")
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [*font_manager.fontManager.ttflist, fake])
    use_installed_cjk_fonts.cache_clear()
    try:
        with matplotlib.rc_context():
            assert "Noto Sans CJK SC" in use_installed_cjk_fonts()
            assert matplotlib.rcParams["font.sans-serif"][-1] == "Noto Sans CJK SC"
    finally:
        use_installed_cjk_fonts.cache_clear()
        plot_text.drawable_code_points.cache_clear()
