"""``data_report.html`` rendered in headless Chromium, and ``datacheck.json`` against its documented schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tasks.datacheck.checks import check_examples
from tasks.datacheck.drift import DriftThresholds, compare_summaries, data_summary
from tasks.datacheck.policies import CheckSettings
from tasks.datacheck.report import pair_list, plot_class_histogram, plot_pairs, report_pictures, write_data_report
from tests.datacheck.test_checks import CLASSES, base_examples, make_splits
from tests.helpers.chromium import drawn_rows, screenshot

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "datacheck.schema.json"


def leaky_report(tmp_path: Path) -> tuple[dict, Path]:
    images, labels, split_of = base_examples(30)
    images[28] = images[3].copy()
    labels[28] = labels[3]
    splits = make_splits(images, labels, split_of)
    result = check_examples(splits, CLASSES, CheckSettings(on_leak="warn"))
    by_name = {s.name: s for s in splits}

    def pixels(split: str, index: int) -> np.ndarray:
        return by_name[split].images[by_name[split].rows[index]]

    plot_class_histogram(result.report, tmp_path / "class_histogram.png")
    plot_pairs(pair_list(result.report), pixels, tmp_path / "pairs.png")
    return result.report, tmp_path


def test_the_data_report_renders_with_findings_pictures_and_drift(tmp_path: Path) -> None:
    report, folder = leaky_report(tmp_path)
    previous = data_summary(report, "a")
    current = json.loads(json.dumps(previous))
    current["splits"]["train"]["class_counts"] = [20, 1, 1]
    drift = compare_summaries(previous, current, DriftThresholds())
    page = write_data_report(folder / "data_report.html", report, title="digits: data check",
                             pictures=report_pictures(folder), drift=drift)
    text = page.read_text()
    assert "1 images leak across splits" in text and "img3.png" in text and "img28.png" in text
    assert "Drift against the previous run" in text and text.count("data:image/png;base64,") == 2
    pixels = screenshot(page, tmp_path / "data_report.png")
    assert drawn_rows(pixels) > 600  # tables and two pictures, not an empty page


def test_datacheck_json_follows_its_schema(tmp_path: Path) -> None:
    import jsonschema

    report, _ = leaky_report(tmp_path)
    jsonschema.validate(json.loads(json.dumps(report)), json.loads(SCHEMA.read_text()))
    report["findings"]["leak"].pop("count")
    try:
        jsonschema.validate(report, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as error:
        assert "count" in str(error)
    else:
        raise AssertionError("a finding without its count passed the schema")
