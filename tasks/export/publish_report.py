"""The publish artifact's pictures and report: the grid of flipped test examples and ``publish_report.html``
(the decision, both models' metrics on the paired examples, McNemar, per-class deltas, the grid). matplotlib on
Agg; no Luigi, no TensorFlow.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.evaluation.plot_text import drawable_label
from tasks.runtime.figures import plt, save_figure, show_image
from tasks.runtime.html_page import embedded_png, html_page

GRID_COLUMNS = 8
GRID_PER_DIRECTION = 24  # pictures per direction (publish.json lists more)
MAX_CLASS_ROWS = 60  # per-class rows shown, worst deltas first (publish.json has every class)
DIRECTIONS = (("right_to_wrong", "champion right, new model wrong"),
              ("wrong_to_right", "champion wrong, new model right"))


def plot_flipped_grid(comparison: dict[str, Any], images: dict[int, np.ndarray], path: Path) -> Path:
    """Both directions of ``comparison["flipped"]``, one block each, every picture titled with its true label and
    both predictions; ``images`` maps a listed example's index to its pixels."""
    blocks = [(kind, title, comparison["flipped"][kind]) for kind, title in DIRECTIONS]
    rows = [max(1, math.ceil(min(len(flipped["examples"]), GRID_PER_DIRECTION) / GRID_COLUMNS))
            for _, _, flipped in blocks]
    heights = [count if flipped["examples"] else 0.4 for count, (_, _, flipped) in zip(rows, blocks, strict=True)]
    fig = plt.figure(figsize=(1.7 * GRID_COLUMNS, 2.0 * sum(heights) + 0.8))
    try:
        subfigures = np.asarray(fig.subfigures(2, 1, height_ratios=heights)).ravel()
        for subfigure, (_, title, flipped), count in zip(subfigures, blocks, rows, strict=True):
            listed = flipped["examples"][:GRID_PER_DIRECTION]
            shown = f" (first {len(listed)} shown)" if flipped["count"] > len(listed) else ""
            subfigure.suptitle(f"{title}: {flipped['count']}{shown}", fontsize=11)
            axes = subfigure.subplots(count, GRID_COLUMNS, squeeze=False).ravel()
            for ax in axes:
                ax.axis("off")
            if not listed:
                axes[0].text(0.0, 0.5, "none", ha="left", va="center")
            for ax, row in zip(axes, listed, strict=False):
                show_image(ax, images[row["index"]])
                ax.set_title(f"true {drawable_label(row['label'])}\nwas {drawable_label(row['champion'])}"
                             f" / now {drawable_label(row['challenger'])}", fontsize=7)
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def listed_indices(comparison: dict[str, Any]) -> list[int]:
    """The indices of the examples the grid shows, both directions."""
    return [row["index"] for kind, _ in DIRECTIONS
            for row in comparison["flipped"][kind]["examples"][:GRID_PER_DIRECTION]]


# ---- the HTML report ----------------------------------------------------------------------------------------
def write_publish_report(path: Path, decision: dict[str, Any], grid: Path | None) -> Path:
    """``publish_report.html``, self-contained (the grid embedded)."""
    name, comparison = decision["name"], decision.get("comparison")
    title = f"{name}: publish decision"
    parts = [_verdict(decision), _table([("metric", decision["metric"]), ("new model (whole test split)",
                                                                           decision["value"])])]
    if comparison is None:
        parts.append("<p>No published version to compare with: judged by the floor and the model's health.</p>")
    else:
        parts += _comparison_sections(comparison, grid)
    Path(path).write_text(html_page(title, parts, extra_css=CSS), encoding="utf-8")
    return Path(path)


def _verdict(decision: dict[str, Any]) -> str:
    if decision["published"]:
        return f'<p class="verdict good">Published as version {decision["published_version"]}.</p>'
    return f'<p class="verdict bad">Not published: {_text(decision["reason"])}</p>'


def _comparison_sections(comparison: dict[str, Any], grid: Path | None) -> list[str]:
    version, left_out, test = comparison["champion_version"], comparison["left_out"], comparison["mcnemar"]
    paired = [
        ("champion", f"version {version}"),
        ("paired test examples", comparison["examples"]),
        (f"champion's {comparison['metric']}", comparison["champion"]),
        (f"new model's {comparison['metric']}", comparison["challenger"]),
        ("left out: the champion trained on them", left_out["trained_on"]
         if comparison["trained_on_known"] else "unknown (the champion lists no training examples)"),
        ("left out: a class the champion does not know", left_out["unknown_class"]),
    ]
    mcnemar = [("b: champion right, new model wrong", test["b"]), ("c: champion wrong, new model right", test["c"]),
               ("p-value (exact, two-sided)", f"{test['p_value']:.3g}")]
    parts = ["<h2>Champion and new model on the same test examples</h2>", _table(paired),
             "<h2>McNemar test</h2>", _table(mcnemar), "<h2>Per class (worst change first)</h2>",
             _class_table(comparison["per_class"])]
    if grid is not None:
        parts += ["<h2>Flipped examples</h2>", embedded_png(grid, "flipped examples")]
    for kind, title in DIRECTIONS:
        parts += [f"<h3>{_text(title)}</h3>", _flipped_table(comparison["flipped"][kind])]
    return parts


def _class_table(rows: Sequence[dict[str, Any]]) -> str:
    shown = sorted(rows, key=lambda row: (row["delta"], row["class"]))[:MAX_CLASS_ROWS]
    head = "<tr><th>class</th><th>count</th><th>champion recall</th><th>new recall</th><th>delta</th></tr>"
    body = "".join(
        f'<tr><td>{_text(row["class"])}</td><td>{row["count"]}</td><td>{_number(row["champion_recall"])}</td>'
        f'<td>{_number(row["challenger_recall"])}</td>'
        f'<td class="{"down" if row["delta"] < 0 else "up" if row["delta"] > 0 else ""}">{row["delta"]:+.4f}</td></tr>'
        for row in shown)
    more = f"<p>{len(rows) - len(shown)} more classes in publish.json.</p>" if len(rows) > len(shown) else ""
    return f"<table>{head}{body}</table>{more}"


def _flipped_table(flipped: dict[str, Any]) -> str:
    if not flipped["examples"]:
        return "<p>none</p>"
    head = "<tr><th>key</th><th>true</th><th>champion</th><th>new model</th></tr>"
    body = "".join(f"<tr><td>{_text(row['key'])}</td><td>{_text(row['label'])}</td><td>{_text(row['champion'])}</td>"
                   f"<td>{_text(row['challenger'])}</td></tr>" for row in flipped["examples"])
    more = (f"<p>{flipped['count'] - len(flipped['examples'])} more not listed.</p>"
            if flipped["count"] > len(flipped["examples"]) else "")
    return f"<table>{head}{body}</table>{more}"


def _table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_text(label)}</th><td>{_number(value)}</td></tr>"
                               for label, value in rows) + "</table>"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value and abs(value) < 1e-3 else f"{value:.4f}"
    return "n/a" if value is None else _text(str(value))


def _text(value: Any) -> str:
    return html.escape(str(value))


# The paired deltas: a class the new model is worse on in red, better on in green.
CSS = ".down{color:#8a1c17;font-weight:bold}.up{color:#1d5e20}"
