"""Class names that the report plots can draw: CJK fonts when installed, code points when not. No Luigi.

Matplotlib's bundled DejaVu Sans has no CJK glyphs, so HWDB characters came out as empty boxes (with a
"Glyph missing" warning per character). ``use_installed_cjk_fonts`` adds any installed CJK font as a
fallback family; ``drawable_label`` spells every character that no configured font has as ``U+4E2D``,
so a label is always readable in the PNG (the HTML report shows the characters themselves).
"""

from __future__ import annotations

import functools

from matplotlib import font_manager, rcParams
from matplotlib.ft2font import FT2Font

# Family names of the common CJK fonts (Noto/Source Han, WenQuanYi, AR PL, Droid fallback, Windows, macOS).
CJK_FAMILY_HINTS = ("CJK", "Han Sans", "Han Serif", "WenQuanYi", "AR PL", "Droid Sans Fallback", "SimHei",
                    "SimSun", "Microsoft YaHei", "PingFang", "Hiragino", "Heiti", "Songti")


@functools.lru_cache(maxsize=1)
def use_installed_cjk_fonts() -> tuple[str, ...]:
    """Append installed CJK families to matplotlib's sans-serif fallback list (once); returns them."""
    families = sorted({font.name for font in font_manager.fontManager.ttflist
                       if any(hint.lower() in font.name.lower() for hint in CJK_FAMILY_HINTS)})
    if families:
        rcParams["font.sans-serif"] = [*rcParams["font.sans-serif"], *families]
    return tuple(families)


@functools.lru_cache(maxsize=1)
def drawable_code_points() -> frozenset[int]:
    """Code points some font of matplotlib's sans-serif list (with the CJK fallbacks) can draw."""
    use_installed_cjk_fonts()
    paths = set()
    for family in rcParams["font.sans-serif"]:
        try:
            paths.add(font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False))
        except ValueError:  # a listed family that is not installed
            continue
    if not paths:
        paths.add(font_manager.findfont(font_manager.FontProperties(family="sans-serif")))
    points: set[int] = set()
    for path in paths:
        points.update(FT2Font(path).get_charmap())
    return frozenset(points)


def drawable_label(text: str) -> str:
    """``text`` with each character no configured font can draw written as its code point (``U+4E2D``)."""
    points = drawable_code_points()
    return "".join(char if ord(char) in points or char.isspace() else f"U+{ord(char):04X}" for char in text)
