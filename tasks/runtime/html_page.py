"""The reports' HTML pages: one style, the page around a report's body, pictures embedded as data URIs so a page
is one self-contained file. Plain Python (no matplotlib, no TensorFlow).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

REPORT_CSS = (
    ".verdict{font-size:1.2em;font-weight:bold;padding:6px 10px;border-radius:4px;display:inline-block}"
    ".good{background:#e3f5e1;color:#1d5e20}.warn{background:#fff4d6;color:#7a5300}"
    ".bad{background:#fde2e1;color:#8a1c17}.warnings li{margin:4px 0}"
    "body{font-family:sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%;border:1px solid #ddd}"
)


def html_page(title: str, body: Sequence[str], *, extra_css: str = "") -> str:
    """A whole page: the report style (then ``extra_css``), ``title`` as its heading, then ``body``."""
    return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title>", f"<style>{REPORT_CSS}{extra_css}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>", *body, "</body></html>"]) + "\n"


def embedded_png(path: Path, caption: str) -> str:
    """An ``<img>`` holding the PNG at ``path`` itself."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(caption, quote=True)}" src="data:image/png;base64,{data}">'
