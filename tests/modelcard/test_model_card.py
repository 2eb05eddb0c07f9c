"""The model card (tasks/modelcard/): built from inputs shaped as the real stages shape them (metrics from the
evaluation's own accumulator and health check, datacheck.json from the data check's `check_examples`, the
comparison from tasks/export/comparison.py), checked against the vendored Model Card Toolkit schema, and drawn in
headless Chromium from a real published run."""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.datacheck.checks import check_examples
from tasks.datacheck.files import CLASS_HISTOGRAM_FILE, DATACHECK_FILE
from tasks.datacheck.policies import CheckSettings
from tasks.datacheck.scan import SplitExamples
from tasks.evaluation.files import CONFUSION_MATRIX_PLOT_FILE, METRICS_FILE
from tasks.evaluation.health import HEALTH_KEY, assess
from tasks.evaluation.report import MetricsAccumulator
from tasks.export import comparison as paired
from tasks.export.files import LABELS_FILE, PUBLISH_RECORD_FILE
from tasks.formats.tfrecord import read_labels_txt
from tasks.modelcard.card import ModelCardInputs, build_model_card, wilson_interval
from tasks.modelcard.files import MODEL_CARD_FILE, MODEL_CARD_HTML_FILE
from tasks.modelcard.render import render_model_card_html, write_model_card
from tasks.modelcard.schema import (
    SCHEMA_FILE,
    ModelCardError,
    card_problems,
    load_schema,
    validate_model_card,
)
from tasks.store.artifacts import MANIFEST_NAME
from tasks.training.files import TRAIN_INFO_FILE
from tests.helpers.chromium import drawn_rows, screenshot

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "tasks" / "modelcard" / "model_card_schema"
CLASSES = ["disc", "square", "triangle", "star"]
NEVER = "triangle"  # the class the model below never predicts
ABSENT = "star"  # the class the test split below holds no example of


# ---- inputs as the stages make them ----------------------------------------------------------------------------
def evaluation_metrics(num_heads: int = 1) -> dict[str, Any]:
    """metrics.json as Evaluate writes it: the accumulator's result, the split, the count and the health, for a
    model that never predicts NEVER on a test split without ABSENT."""
    rng = np.random.default_rng(0)
    count = 24
    present = [CLASSES.index(name) for name in CLASSES if name != ABSENT]
    labels = rng.choice(present, size=(count, num_heads)) if num_heads > 1 else np.repeat(present, count // 3)
    predicted = np.where(labels == CLASSES.index(NEVER), CLASSES.index("disc"), labels)
    predicted[:2] = CLASSES.index("square")  # a few mistakes besides
    probabilities = np.eye(len(CLASSES))[predicted] * 0.7 + 0.3 / len(CLASSES)
    accumulator = MetricsAccumulator(CLASSES, top_k=2, num_heads=num_heads)
    accumulator.update(labels, probabilities)
    metrics = accumulator.result()
    metrics.update(split="test", examples=accumulator.examples)
    metric = "top1_accuracy" if num_heads == 1 else "sequence_accuracy"
    history = [{"accuracy": 0.5 + 0.1 * epoch, "val_accuracy": 0.5 + 0.08 * epoch, "val_loss": 1.0 - 0.1 * epoch}
               for epoch in range(4)]
    metrics[HEALTH_KEY] = assess(metric=metric, value=float(metrics[metric]), confusion=accumulator.confusion,
                                 class_names=CLASSES, history=history, num_heads=num_heads).to_json()
    return json.loads(json.dumps(metrics))


def textured(seed: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4))
    return np.clip(np.kron(coarse, np.ones((size // 4, size // 4))) + rng.normal(0, 20, (size, size)), 0, 255
                   ).astype(np.uint8)[..., None]


def datacheck_report() -> dict[str, Any]:
    """datacheck.json as the data check writes it, for splits whose test split lacks ABSENT (a warning)."""
    split_of = ["train"] * 16 + ["validation"] * 4 + ["test"] * 6
    labels = [i % 4 for i in range(16)] + [0, 1, 2, 3] + [0, 1, 2, 0, 1, 2]
    pixels = np.stack([textured(i) for i in range(len(labels))])
    keys = np.asarray([f"img{i}.png".encode() for i in range(len(labels))])
    digests = np.asarray([hashlib.sha256(p.tobytes()).digest() for p in pixels], dtype="S32")
    splits = [SplitExamples(name, pixels, np.asarray(labels, dtype=np.int32), keys, digests,
                            np.asarray([i for i, s in enumerate(split_of) if s == name]))
              for name in ("train", "validation", "test")]
    return json.loads(json.dumps(check_examples(splits, CLASSES, CheckSettings()).report))


def champion_comparison(version: int = 3) -> dict[str, Any]:
    """publish.json's ``comparison`` from tasks/export/comparison.py: both models on the same 12 test examples."""
    labels = np.array([0, 1, 2] * 4)
    challenger = labels.copy()
    challenger[[0, 5]] = 1  # wrong on two
    champion = labels.copy()
    champion[[1, 4, 7, 8, 11]] = 0  # wrong on five
    examples = paired.SplitExamples(keys=[f"test/{i}.png" for i in range(12)], digests=[f"{i:064x}" for i in range(12)],
                            labels=labels, class_names=CLASSES)
    return paired.compare(examples, challenger, champion, CLASSES, champion_version=version, metric="top1_accuracy",
                   trained_on=frozenset())


def png(color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), color).save(buffer, format="PNG")
    return buffer.getvalue()


def inputs(**changes: Any) -> ModelCardInputs:
    metrics = evaluation_metrics()
    fields: dict[str, Any] = dict(
        name="shapes", version=4, date="2026-12-07", dataset="images", metric="top1_accuracy", metrics=metrics,
        class_names=CLASSES, image_shape=(32, 32, 3), architecture="small_cnn",
        train_params={"epochs": "5", "batch_size": "16", "model": ""}, datacheck=datacheck_report(),
        decision={"name": "shapes", "metric": "top1_accuracy", "value": metrics["top1_accuracy"],
                  "published": True, "published_version": 4, "current_version": 3, "current_value": 0.5,
                  "comparison": champion_comparison()},
        artifact_keys={"train": "4fc64a5729cd", "evaluate": "a4e669c13c87"},
        source_fingerprints={"images": "sha256:" + "ab" * 32}, data_graphics={"Examples per class": png()})
    fields.update(changes)
    return ModelCardInputs(**fields)


def metric_rows(card: dict[str, Any]) -> list[dict[str, Any]]:
    return card["quantitative_analysis"]["performance_metrics"]


def limitation_texts(card: dict[str, Any]) -> list[str]:
    return [item["description"] for item in card["considerations"]["limitations"]]


def tradeoff_texts(card: dict[str, Any]) -> list[str]:
    return [item["description"] for item in card["considerations"].get("tradeoffs", [])]


# ---- the schema ------------------------------------------------------------------------------------------------
def test_the_vendored_schema_is_the_toolkits_file_with_its_licence_and_origin() -> None:
    note = (SCHEMA_DIR / "README.md").read_text()
    digest = hashlib.sha256((SCHEMA_DIR / SCHEMA_FILE).read_bytes()).hexdigest()
    assert digest in note, "the schema differs from the copy its origin note describes"
    assert "tensorflow/model-card-toolkit" in note and "v0.0.2" in note
    assert "Apache License" in (SCHEMA_DIR / "LICENSE").read_text()
    schema = load_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert set(schema["properties"]) == {"schema_version", "model_details", "model_parameters",
                                         "quantitative_analysis", "considerations"}


def test_a_card_from_real_shaped_inputs_follows_the_schema() -> None:
    given = inputs()
    card = build_model_card(given)
    assert card_problems(card) == []
    validate_model_card(card)  # raises on a problem
    assert card["schema_version"] == "0.0.2"
    details = card["model_details"]
    assert details["name"] == "shapes" and details["version"]["name"] == "4"
    assert details["version"]["date"] == "2026-12-07"
    for fact in ("epochs=5", "4fc64a5729cd", "sha256:" + "ab" * 32):
        assert fact in details["documentation"]
    assert card["model_parameters"]["model_architecture"] == "small_cnn"
    data = card["model_parameters"]["data"]
    assert [entry["name"] for entry in data] == ["images train split", "images validation split", "images test split"]
    report = given.datacheck
    assert report is not None
    for entry, split in zip(data, ("train", "validation", "test"), strict=True):
        assert f"{report['splits'][split]['examples']} examples" in entry["description"]
    assert all(warning in data[0]["description"] for warning in report["warnings"])
    assert base64.b64decode(data[0]["graphics"]["collection"][0]["image"]) == png()


def test_every_metric_and_every_class_is_reported_with_its_slice() -> None:
    given = inputs()
    card = build_model_card(given)
    rows = metric_rows(card)
    headline = {row["type"]: row for row in rows if row["slice"] == "test split"}
    assert headline["top1_accuracy"]["value"] == f"{given.metrics['top1_accuracy']:.4f}"
    assert headline["top2_accuracy"]["value"] == f"{given.metrics['top_k_accuracy']:.4f}"
    assert {"balanced_accuracy", "macro_f1"} <= set(headline)
    for entry in given.metrics["per_class"]:
        sliced = {row["type"]: row["value"] for row in rows if row["slice"] == f"test split, class {entry['class']}"}
        assert sliced == {"precision": f"{entry['precision']:.4f}", "recall": f"{entry['recall']:.4f}",
                          "f1": f"{entry['f1']:.4f}", "support": str(entry["support"])}
    bounds = headline["top1_accuracy"]["confidence_interval"]
    value = float(headline["top1_accuracy"]["value"])
    assert float(bounds["lower_bound"]) < value < float(bounds["upper_bound"])


def test_the_wilson_interval_bounds_solve_its_equation() -> None:
    """Both bounds p of the Wilson interval solve (observed - p)^2 = z^2 p (1 - p) / n."""
    z = 1.959964
    for observed, trials in ((0.5, 100), (0.9, 30), (0.0, 12), (1.0, 7)):
        low, high = wilson_interval(observed, trials)
        assert 0.0 <= low <= observed <= high <= 1.0
        for bound in (low, high):
            assert math.isclose((observed - bound) ** 2, z * z * bound * (1 - bound) / trials, abs_tol=1e-12)
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0.5, 0)


def _set(card: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        card = card[key]
    card[path[-1]] = value


@pytest.mark.parametrize(("path", "value", "named"), [
    (("quantitative_analysis", "performance_metrics", 0, "value"), 0.9, "quantitative_analysis/performance_metrics/0"),
    (("model_details", "version", "date"), "07/12/2026", "model_details/version/date"),
    (("considerations", "limitations", 0, "severity"), "high", "considerations/limitations/0"),
    (("model_details", "comparison"), {"b": 1}, "model_details"),
    (("champion",), 3, "(the card)"),
    (("model_parameters", "data", 0, "graphics", "collection", 0, "image"), base64.b64encode(b"GIF89a").decode(),
     "model_parameters/data/0/graphics/collection/0/image"),
])
def test_a_broken_card_fails_validation_naming_where(path: tuple[Any, ...], value: Any, named: str) -> None:
    card = build_model_card(inputs())
    _set(card, path, value)
    with pytest.raises(ModelCardError, match="does not follow the Model Card Toolkit schema v0.0.2") as raised:
        validate_model_card(card)
    message = str(raised.value)
    assert named in message and "\n" not in message


def test_the_strict_check_refuses_a_nested_field_the_toolkits_schema_lets_through() -> None:
    """The toolkit's schema forbids unknown properties at the top only; the card check forbids them anywhere."""
    import jsonschema

    card = build_model_card(inputs())
    card["considerations"]["limitations"][0]["severity"] = "high"
    jsonschema.Draft7Validator(load_schema()).validate(card)  # the schema as published accepts it
    assert any("'severity' was unexpected" in problem for problem in card_problems(card))


# ---- what the card says ----------------------------------------------------------------------------------------
def test_limitations_name_classes_never_predicted_and_classes_not_evaluated() -> None:
    card = build_model_card(inputs())
    texts = limitation_texts(card)
    never = [text for text in texts if text.startswith("Never predicted")]
    assert len(never) == 1 and NEVER in never[0] and "disc" not in never[0]
    absent = [text for text in texts if text.startswith("Not evaluated")]
    assert len(absent) == 1 and ABSENT in absent[0]
    health = inputs().metrics[HEALTH_KEY]["warnings"]
    assert health and all(any(warning in text for text in texts) for warning in health)
    report = datacheck_report()
    assert report["warnings"] and all(any(warning in text for text in texts) for warning in report["warnings"])


def test_the_comparison_appears_in_words_and_as_its_record() -> None:
    comparison = champion_comparison(version=3)
    card = build_model_card(inputs())
    words, record = tradeoff_texts(card)
    test = comparison["mcnemar"]
    expected = (f"Compared with version 3 on the same {comparison['examples']} test examples: top1_accuracy "
                f"{comparison['challenger']:.4f} (this version) vs {comparison['champion']:.4f} (version 3); "
                f"McNemar b={test['b']} (right before, wrong now), c={test['c']} (wrong before, right now), "
                f"p={test['p_value']:.3g}.")
    assert words.startswith(expected)
    assert (test["b"], test["c"]) == (2, 5)  # the predictions above: two flipped to wrong, five to right
    assert "Largest changes of per-class recall" in words
    assert json.loads(record.partition(": ")[2]) == json.loads(json.dumps(comparison))
    assert card["model_details"]["version"]["diff"] == expected
    page = render_model_card_html(card)
    assert expected.replace("'", "&#x27;") in page and "The comparison record" in page


def test_without_a_paired_comparison_the_card_says_what_the_gate_did() -> None:
    gate_only = {"metric": "top1_accuracy", "value": 0.75, "published": True, "current_version": 2,
                 "current_value": 0.6}
    card = build_model_card(inputs(decision=gate_only))
    assert tradeoff_texts(card) == ["The publish gate compared top1_accuracy 0.7500 with version 2's 0.6000 "
                                    "(not on paired examples)."]
    first = build_model_card(inputs(decision={"metric": "top1_accuracy", "value": 0.75, "current_version": None}))
    assert "tradeoffs" not in first["considerations"]
    assert first["model_details"]["version"]["diff"] == "The first published version of shapes."
    for each in (card, first):
        validate_model_card(each)


def test_a_run_without_a_data_check_says_so() -> None:
    card = build_model_card(inputs(datacheck=None, data_graphics={}))
    validate_model_card(card)
    assert [entry["name"] for entry in card["model_parameters"]["data"]] == ["images test split"]
    assert any(text.startswith("No data check ran") for text in limitation_texts(card))


def test_a_multi_head_card_reports_positions_and_the_sequence_metric() -> None:
    metrics = evaluation_metrics(num_heads=2)
    card = build_model_card(inputs(metrics=metrics, metric="sequence_accuracy", decision=None))
    validate_model_card(card)
    assert "2 labels, each one of 4 classes" in card["model_details"]["overview"]
    positions = [row for row in metric_rows(card) if ", position " in row["slice"]]
    assert [row["value"] for row in positions] == [f"{value:.4f}" for value in metrics["per_head_accuracy"]]
    sequence = next(row for row in metric_rows(card) if row["type"] == "sequence_accuracy")
    assert "confidence_interval" in sequence


def test_a_missing_dataset_metric_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="no 'sequence_accuracy'"):
        build_model_card(inputs(metric="sequence_accuracy"))


def test_write_model_card_writes_both_files_and_refuses_a_broken_card(tmp_path: Path) -> None:
    card = build_model_card(inputs(class_names=CLASSES))
    assert write_model_card(tmp_path, card) == [MODEL_CARD_FILE, MODEL_CARD_HTML_FILE]
    assert json.loads((tmp_path / MODEL_CARD_FILE).read_text(encoding="utf-8")) == card
    assert (tmp_path / MODEL_CARD_HTML_FILE).read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    broken = copy.deepcopy(card)
    broken["model_details"]["name"] = 7
    elsewhere = tmp_path / "broken"
    elsewhere.mkdir()
    with pytest.raises(ModelCardError, match="model_details/name"):
        write_model_card(elsewhere, broken)
    assert list(elsewhere.iterdir()) == []


def test_the_page_escapes_what_the_data_names() -> None:
    metrics = evaluation_metrics()
    metrics["per_class"][0]["class"] = "<script>alert(1)</script>"
    page = render_model_card_html(build_model_card(inputs(metrics=metrics)))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# ---- a real published run, drawn -------------------------------------------------------------------------------
def _only(root: Path, stage: str) -> Path:
    found = sorted(p for p in (root / stage).iterdir() if not p.name.startswith("."))  # not the work folders
    assert len(found) == 1, f"expected one {stage} artifact in {root}, found {found}"
    return found[0]


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def card_of_published_run(root: Path) -> dict[str, Any]:
    """The card of the images run's published version, from its artifacts, as the publish stage will build it."""
    evaluation, train, check = _only(root, "evaluate"), _only(root, "train"), _only(root, "datacheck")
    publish = _only(root, "publish")
    decision = _read(publish / PUBLISH_RECORD_FILE)
    info = _read(train / TRAIN_INFO_FILE)
    keys = {stage: _read(_only(root, stage) / MANIFEST_NAME)["key"]
            for stage in ("datacheck", "train", "evaluate", "freeze")}
    return build_model_card(ModelCardInputs(
        name=decision["name"], version=int(decision["published_version"]), date="2026-12-07", dataset="images",
        metric=decision["metric"], metrics=_read(evaluation / METRICS_FILE),
        class_names=read_labels_txt(_only(root, "freeze") / LABELS_FILE), image_shape=info["image_shape"],
        architecture=info["model"], train_params=_read(train / MANIFEST_NAME)["params"],
        datacheck=_read(check / DATACHECK_FILE), decision=decision, artifact_keys=keys,
        data_graphics={"Examples per class": (check / CLASS_HISTOGRAM_FILE).read_bytes()},
        analysis_graphics={"Confusion matrix": (evaluation / CONFUSION_MATRIX_PLOT_FILE).read_bytes()}))


def test_a_published_runs_card_validates_and_renders_in_chromium(images_published_run: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    _, root = images_published_run  # the session's `tfpipe run images --publish` (tests/conftest.py)
    card = card_of_published_run(root)
    assert write_model_card(tmp_path, card) == [MODEL_CARD_FILE, MODEL_CARD_HTML_FILE]
    page = (tmp_path / MODEL_CARD_HTML_FILE).read_text(encoding="utf-8")
    for heading in ("Model details", "Model parameters", "Data", "Quantitative analysis", "Limitations"):
        assert f"<h2>{heading}</h2>" in page
    for name in ("disc", "square", "triangle"):
        assert f"<td>{name}</td>" in page  # a row of the per-class table
    pixels = screenshot(tmp_path / MODEL_CARD_HTML_FILE, tmp_path / "card.png", height=4000)
    assert drawn_rows(pixels) > 1500, "the page draws little: sections, tables or pictures are missing"
    # The embedded pictures are decoded and drawn: the histogram's and the confusion matrix's colours.
    colourful = (pixels.max(axis=2).astype(int) - pixels.min(axis=2)) > 80
    assert colourful.sum() > 5000, "the card's graphics are not drawn"
