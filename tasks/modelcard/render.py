"""A model card as a self-contained HTML page (inline style, graphics as data URIs), and both files of a card
written into a published version's folder. Plain Python (no Luigi, no TensorFlow).

The page is drawn from the card alone (a dict following the Model Card Toolkit's schema, tasks/modelcard/card.py):
the overview, the version and what changed, the model's details and formats, the data with its statistics,
the metrics (headline and per class), the champion/challenger comparison and the limitations.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks.modelcard.card import CLASS_SLICE, COMPARISON_RECORD, PER_CLASS_METRICS
from tasks.modelcard.files import MODEL_CARD_FILE, MODEL_CARD_FILES, MODEL_CARD_HTML_FILE
from tasks.modelcard.schema import validate_model_card
from tasks.store.layout import PUBLISH_RECORD_FILE

WEAK_ROW = ' class="weak"'  # a per-class row whose class has examples but a recall of 0
MAX_CLASS_ROWS = 60  # per-class rows drawn; above it, the classes of lowest recall (the card holds them all)
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 60em;
       color: #1d1d1f; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h1 small { color: #666; font-weight: normal; font-size: 0.6em; }
h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
.overview { font-size: 1.1em; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.weak td { background: #fdecea; }
ul.limitations { padding-left: 0; }
ul.limitations li { margin: 0.3em 0; padding-left: 0.3em; border-left: 4px solid #e0a400; list-style: none; }
.comparison { background: #eef5ff; border-left: 4px solid #2f6fd6; padding: 0.5em 0.8em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; font-size: 0.85em; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; max-height: 40em; border: 1px solid #d0d7de; }
figcaption { color: #555; font-size: 0.9em; } .note { color: #555; font-size: 0.9em; }
"""


def write_model_card(directory: Path | str, card: Mapping[str, Any]) -> list[str]:
    """Check ``card`` against the schema, then write ``model_card.json`` and ``model_card.html`` into
    ``directory``; returns their names, in the order written."""
    validate_model_card(card)
    folder = Path(directory)
    (folder / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / MODEL_CARD_HTML_FILE).write_text(render_model_card_html(card), encoding="utf-8")
    return list(MODEL_CARD_FILES)


def render_model_card_html(card: Mapping[str, Any]) -> str:
    details = card.get("model_details", {})
    parameters = card.get("model_parameters", {})
    analysis = card.get("quantitative_analysis", {})
    considered = card.get("considerations", {})
    title = f"Model card: {details.get('name', 'model')}"
    body = [
        header(details),
        section("Model details", model_details_html(details)),
        section("Model parameters", parameters_html(parameters)),
        section("Data", data_html(parameters.get("data", []))),
        section("Quantitative analysis", analysis_html(analysis)),
        section("Comparison with the published version", tradeoffs_html(considered.get("tradeoffs", []))),
        section("Limitations", limitations_html(considered.get("limitations", []))),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_text(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")


def section(title: str, content: str) -> str:
    return f"<section><h2>{_text(title)}</h2>\n{content}</section>" if content else ""


def header(details: Mapping[str, Any]) -> str:
    version = details.get("version", {})
    named = f" <small>version {_text(version['name'])}</small>" if version.get("name") else ""
    dated = f"<p class=\"meta\">published {_text(version['date'])}</p>" if version.get("date") else ""
    return (f"<header><h1>{_text(details.get('name', 'model'))}{named}</h1>{dated}"
            f"{_paragraphs(details.get('overview', ''), 'overview')}</header>")


def model_details_html(details: Mapping[str, Any]) -> str:
    parts = [_paragraphs(details.get("documentation", ""))]
    version = details.get("version", {})
    if version.get("diff"):
        parts.append(f"<h3>Changes from the previous version</h3>{_paragraphs(version['diff'])}")
    rows = [("Path", _text(details["path"]))] if details.get("path") else []
    if details.get("licenses"):
        rows.append(("Licences", ", ".join(_text(item.get("identifier") or item.get("custom_text", ""))
                                           for item in details["licenses"])))
    if details.get("references"):
        rows.append(("References", "<br>".join(_link(item.get("reference", "")) for item in details["references"])))
    parts.append(_key_table(rows))
    return "\n".join(part for part in parts if part)


def parameters_html(parameters: Mapping[str, Any]) -> str:
    rows = [(label, _text(parameters[key])) for label, key in
            (("Architecture", "model_architecture"), ("Input", "input_format"), ("Output", "output_format"))
            if parameters.get(key)]
    for label, key in (("Input", "input_format_map"), ("Output", "output_format_map")):
        for pair in parameters.get(key, []):
            rows.append((f"{label} {pair.get('key', '')}", _text(pair.get("value", ""))))
    return _key_table(rows)


def data_html(datasets: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for dataset in datasets:
        name = _link(dataset["link"], dataset.get("name", "")) if dataset.get("link") else _text(dataset.get("name"))
        parts.append(f"<h3>{name}</h3>{_paragraphs(dataset.get('description', ''))}"
                     f"{graphics_html(dataset.get('graphics', {}))}")
    return "\n".join(parts)


def analysis_html(analysis: Mapping[str, Any]) -> str:
    metrics = analysis.get("performance_metrics", [])
    per_class: list[Mapping[str, Any]] = []
    headline: list[Mapping[str, Any]] = []
    for metric in metrics:
        is_per_class = metric.get("type") in PER_CLASS_METRICS and CLASS_SLICE in metric.get("slice", "")
        (per_class if is_per_class else headline).append(metric)
    parts = []
    if headline:
        rows = "".join(f"<tr><td>{_text(m.get('type'))}</td><td>{_text(m.get('slice', 'overall'))}</td>"
                       f"<td class=\"number\">{_text(m.get('value'))}</td><td>{_interval(m)}</td></tr>"
                       for m in headline)
        parts.append("<h3>Metrics</h3><table><tr><th>metric</th><th>slice</th><th>value</th>"
                     f"<th>95% interval</th></tr>{rows}</table>")
    if per_class:
        parts.append(per_class_html(per_class))
    parts.append(graphics_html(analysis.get("graphics", {})))
    return "\n".join(part for part in parts if part)


def per_class_html(metrics: Sequence[Mapping[str, Any]]) -> str:
    """One row per class (its slice), one column per metric; the classes of lowest recall first when there are
    too many to draw."""
    table: dict[str, dict[str, Mapping[str, Any]]] = {}
    for metric in metrics:
        table.setdefault(metric["slice"].partition(CLASS_SLICE)[2], {})[metric["type"]] = metric
    names = list(table)
    note = ""
    if len(names) > MAX_CLASS_ROWS:
        names = sorted(names, key=lambda name: _number(table[name].get("recall")))[:MAX_CLASS_ROWS]
        note = (f"<p class=\"note\">The {MAX_CLASS_ROWS} classes of lowest recall of {len(table)}; every class is "
                f"in {MODEL_CARD_FILE}.</p>")
    rows, weak_rows = [], 0
    for name in names:
        row = table[name]
        weak = _number(row.get("recall")) == 0 and _number(row.get("support")) > 0
        weak_rows += weak
        cells = "".join(f"<td class=\"number\">{_text(row[kind]['value']) if kind in row else ''}</td>"
                        for kind in PER_CLASS_METRICS)
        recall_interval = _interval(row["recall"]) if "recall" in row else ""
        row_class = WEAK_ROW if weak else ""
        rows.append(f"<tr{row_class}><td>{_text(name)}</td>{cells}<td>{recall_interval}</td></tr>")
    heads = "".join(f"<th>{_text(kind)}</th>" for kind in PER_CLASS_METRICS)
    legend = ("<p class=\"note\">Red rows: classes with test examples the model never got right.</p>"
              if weak_rows else "")
    return (f"<h3>Per class</h3>{note}<table><tr><th>class</th>{heads}<th>recall 95% interval</th></tr>"
            f"{''.join(rows)}</table>{legend}")


def tradeoffs_html(tradeoffs: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for tradeoff in tradeoffs:
        text = tradeoff.get("description", "")
        if text.startswith(COMPARISON_RECORD):
            record = json.dumps(json.loads(text[len(COMPARISON_RECORD):]), indent=2, ensure_ascii=False)
            parts.append(f"<details><summary>The comparison record ({PUBLISH_RECORD_FILE})</summary>"
                         f"<pre>{_text(record)}</pre></details>")
        else:
            parts.append(f"<div class=\"comparison\">{_paragraphs(text)}</div>")
    return "\n".join(parts)


def limitations_html(limitations: Sequence[Mapping[str, Any]]) -> str:
    if not limitations:
        return ""
    items = "".join(f"<li>{_text(item.get('description', ''))}</li>" for item in limitations)
    return f"<ul class=\"limitations\">{items}</ul>"


def graphics_html(collection: Mapping[str, Any]) -> str:
    figures = [f"<figure><img alt=\"{_text(g.get('name', ''))}\" src=\"data:image/png;base64,{g.get('image', '')}\">"
               f"<figcaption>{_text(g.get('name', ''))}</figcaption></figure>"
               for g in collection.get("collection", [])]
    return "".join(figures)


def _key_table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table; the values are HTML already."""
    if not rows:
        return ""
    return "<table>" + "".join(f"<tr><th>{_text(key)}</th><td>{value}</td></tr>" for key, value in rows) + "</table>"


def _paragraphs(text: str, css: str = "") -> str:
    attribute = f" class=\"{css}\"" if css else ""
    return "".join(f"<p{attribute}>{_text(part)}</p>" for part in str(text).split("\n\n") if part.strip())


def _interval(metric: Mapping[str, Any]) -> str:
    bounds = metric.get("confidence_interval")
    return f"{_text(bounds.get('lower_bound'))} to {_text(bounds.get('upper_bound'))}" if bounds else ""


def _number(metric: Mapping[str, Any] | None) -> float:
    try:
        return float(metric["value"]) if metric else 0.0
    except (KeyError, ValueError):
        return 0.0


def _link(uri: str, label: str = "") -> str:
    return f"<a href=\"{_text(uri)}\">{_text(label or uri)}</a>"


def _text(value: Any) -> str:
    return html.escape("" if value is None else str(value))
