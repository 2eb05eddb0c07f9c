"""``data_report.html`` and its pictures: class histogram per split, samples per class, the duplicate, leak and
conflict pairs side by side, original sizes, and (for a run) the drift table. Matplotlib only (no TF, no Luigi).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tasks.datacheck.files import CLASS_HISTOGRAM_FILE, PAIRS_FILE, SAMPLE_GRID_FILE, SIZES_FILE
from tasks.runtime.figures import plt, save_figure, show_image
from tasks.runtime.html_page import embedded_png, html_page

PixelsFn = Callable[[str, int], np.ndarray]  # (split, position in split) -> uint8 HxWxC
MAX_BAR_CLASSES = 60  # above this, the histogram draws each split's sorted counts as a line
GRID_CLASSES, GRID_SAMPLES = 16, 8
MAX_PAIRS_DRAWN = 12
# The pictures of a data report, in the order shown, with their captions.
PICTURES = {CLASS_HISTOGRAM_FILE: "Examples per class", SAMPLE_GRID_FILE: "Samples per class",
            PAIRS_FILE: "Leaks, conflicts and duplicates, side by side", SIZES_FILE: "Original image sizes"}
PAIR_KINDS = (("leak", "leak"), ("conflict", "label conflict"), ("duplicate", "duplicate"),
              ("near_duplicate", "near duplicate"))


def report_pictures(directory: Path) -> dict[str, Path]:
    """The pictures a data report's folder holds, by caption."""
    return {caption: Path(directory) / name for name, caption in PICTURES.items() if (Path(directory) / name).exists()}


def plot_class_histogram(report: dict[str, Any], path: Path) -> Path:
    classes = report["classes"]
    splits = report["splits"]
    fig, ax = plt.subplots(figsize=(10, 4))
    if len(classes) <= MAX_BAR_CLASSES:
        width = 0.8 / max(len(splits), 1)
        for i, (name, stats) in enumerate(splits.items()):
            ax.bar(np.arange(len(classes)) + i * width, stats["class_counts"], width, label=name)
        ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
        ax.set_xticklabels([c[:12] for c in classes], rotation=90 if len(classes) > 12 else 0, fontsize=8)
    else:
        for name, stats in splits.items():
            ax.plot(sorted(stats["class_counts"], reverse=True), label=name)
        ax.set_xlabel(f"{len(classes)} classes, largest first")
    ax.set_ylabel("examples")
    ax.legend()
    return _saved(fig, path)


def plot_samples(labels: np.ndarray, pixels: Callable[[int], np.ndarray], class_names: list[str],
                 path: Path) -> Path:
    """Up to GRID_SAMPLES examples of each of the first GRID_CLASSES classes (single-label data), a row each."""
    shown = list(range(min(len(class_names), GRID_CLASSES)))
    fig, axes = plt.subplots(len(shown) or 1, GRID_SAMPLES, figsize=(GRID_SAMPLES * 0.9, max(len(shown), 1) * 0.95),
                             squeeze=False)
    for row, label in enumerate(shown):
        positions = np.flatnonzero(labels == label)[:GRID_SAMPLES] if labels.ndim == 1 else np.arange(0)
        for column in range(GRID_SAMPLES):
            ax = axes[row, column]
            ax.axis("off")
            if column < len(positions):
                show_image(ax, pixels(int(positions[column])))
        axes[row, 0].set_title(class_names[label][:14], fontsize=7, loc="left")
    return _saved(fig, path)


def pair_list(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kind, first, second) pairs to draw, leaks first."""
    pairs = []
    for kind, title in PAIR_KINDS:
        for item in report["findings"][kind]["items"]:
            if "members" in item:
                pairs.append((title, item["members"][0], item["members"][1]))
            else:
                pairs.append((f"{title} ({item['bits']} bits)", item["first"], item["second"]))
    return pairs[:MAX_PAIRS_DRAWN]


def plot_pairs(pairs: list[tuple[str, dict[str, Any], dict[str, Any]]], pixels: PixelsFn, path: Path) -> Path:
    fig, axes = plt.subplots(len(pairs), 2, figsize=(5, 1.6 * len(pairs)), squeeze=False)
    for row, (kind, first, second) in enumerate(pairs):
        for column, member in enumerate((first, second)):
            ax = axes[row, column]
            ax.axis("off")
            show_image(ax, pixels(member["split"], member["index"]))
            ax.set_title(f"{kind}\n{member['split']}: {member['key'][-28:]} ({member['label'][:12]})", fontsize=6)
    return _saved(fig, path)


def plot_sizes(sizes: dict[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4))
    for split, hw in sizes.items():
        ax.scatter(hw[:, 1], hw[:, 0], s=6, alpha=0.5, label=split)
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.legend()
    return _saved(fig, path)


def _saved(fig: Any, path: Path) -> Path:
    """``fig`` laid out, saved as a PNG at ``path`` and closed."""
    fig.tight_layout()
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


# ---- HTML ------------------------------------------------------------------------------------------------------
# Findings and file names read best left-aligned, long cells from their top.
_EXTRA_CSS = "td,th{text-align:left;vertical-align:top}"


def write_data_report(path: Path, report: dict[str, Any], *, title: str, pictures: dict[str, Path],
                      drift: dict[str, Any] | None = None) -> Path:
    """One self-contained HTML page (pictures embedded)."""
    parts = [_verdict(report)]
    if drift is not None:
        parts += ["<h2>Drift against the previous run</h2>", _drift_table(drift)]
    parts += ["<h2>Findings</h2>", _findings_table(report), "<h2>Splits</h2>", _splits_table(report)]
    parts += _details(report)
    for caption, picture in pictures.items():
        parts += [f"<h2>{html.escape(caption)}</h2>", embedded_png(picture, caption)]
    Path(path).write_text(html_page(title, parts, extra_css=_EXTRA_CSS), encoding="utf-8")
    return Path(path)


def _verdict(report: dict[str, Any]) -> str:
    if report["failures"]:
        return f'<p class="verdict bad">Stopped: {len(report["failures"])} finding(s) fail the run</p>' + _list(
            report["failures"])
    if report["warnings"]:
        return f'<p class="verdict warn">Passed with {len(report["warnings"])} warning(s)</p>' + _list(
            report["warnings"])
    return '<p class="verdict good">Passed: no findings</p>'


def _list(lines: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"


def _findings_table(report: dict[str, Any]) -> str:
    rows = ["<tr><th>finding</th><th>count</th><th>policy</th><th>action</th><th>examples (split: file)</th></tr>"]
    for kind, finding in report["findings"].items():
        rows.append(f"<tr><td>{kind.replace('_', ' ')}</td><td>{finding['count']}</td><td>{finding['policy']}</td>"
                    f"<td>{html.escape(finding['action'])}</td><td>{html.escape(_item_names(finding))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _item_name(item: dict[str, Any]) -> str:
    """One finding's item for people: the files of a copy group or pair, a degenerate image, an imbalance."""
    if "members" in item:
        return " = ".join(f"{m['split']}: {m['key']}" for m in item["members"][:3])
    if "first" in item:
        return f"{item['first']['split']}: {item['first']['key']} ~ {item['second']['split']}: {item['second']['key']}"
    if "key" in item:
        return f"{item['split']}: {item['key']}"
    if "missing_classes" in item:
        return f"{item['split']} lacks {', '.join(item['missing_classes'][:8])}"
    return f"{item['split']}: largest class {item['largest']}, smallest {item['smallest']}"


def _item_names(finding: dict[str, Any], shown: int = 8) -> str:
    names = [_item_name(item) for item in finding["items"][:shown]]
    more = finding["count"] - len(names)
    return "; ".join(names) + (f"; and {more} more" if more > 0 and names else "")


def _details(report: dict[str, Any]) -> list[str]:
    """Every listed item of each finding (up to the JSON's limit), one row each, naming the files."""
    parts = []
    for kind, finding in report["findings"].items():
        if not finding["count"] or kind == "imbalance":
            continue
        more = finding["count"] - finding["listed"]
        parts.append(f"<h3>{html.escape(kind.replace('_', ' '))}: {finding['count']}"
                     + (f" (the first {finding['listed']} listed)" if more > 0 else "") + "</h3>")
        rows = "".join(f"<tr><td>{html.escape(_item_name(item))}</td></tr>" for item in finding["items"])
        parts.append(f"<table>{rows}</table>")
    return ["<h2>Every finding</h2>", *parts] if parts else []


def _splits_table(report: dict[str, Any]) -> str:
    rows = ["<tr><th>split</th><th>examples</th><th>classes present</th><th>smallest / largest class</th>"
            "<th>pixel mean (per channel)</th><th>pixel std</th><th>degenerate</th><th>original sizes</th></tr>"]
    for name, s in report["splits"].items():
        present = sum(1 for c in s["class_counts"] if c)
        sizes = s.get("original_sizes")
        count = sizes["distinct_sizes"] if sizes else 0
        size_text = (f"{count} size{'s' if count != 1 else ''}; h {sizes['height']['min']}-{sizes['height']['max']}, "
                     f"w {sizes['width']['min']}-{sizes['width']['max']}, aspect {sizes['aspect_ratio']['min']}-"
                     f"{sizes['aspect_ratio']['max']}" if sizes else "not recorded")
        rows.append(f"<tr><td>{name}</td><td>{s['examples']}</td><td>{present} of {len(s['class_counts'])}</td>"
                    f"<td>{s['balance']['smallest']} / {s['balance']['largest']}</td>"
                    f"<td>{', '.join(f'{v:.1f}' for v in s['pixels']['mean'])}</td>"
                    f"<td>{', '.join(f'{v:.1f}' for v in s['pixels']['std'])}</td><td>{s['degenerate']}</td>"
                    f"<td>{html.escape(size_text)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _drift_table(drift: dict[str, Any]) -> str:
    if not drift.get("rows"):
        return f"<p>{html.escape(drift.get('note', 'no previous run to compare with'))}</p>"
    rows = ["<tr><th>check</th><th>split</th><th>distance</th><th>threshold</th><th>drifted</th><th>detail</th></tr>"]
    for row in drift["rows"]:
        mark = '<span class="bad">yes</span>' if row["drifted"] else "no"
        rows.append(f"<tr><td>{row['check']}</td><td>{row['split']}</td><td>{row['distance']}</td>"
                    f"<td>{row['threshold']}</td><td>{mark}</td><td>{html.escape(row['detail'])}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"
