"""Metrics on hand-made examples, and plots / HTML report written to disk."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from tasks.evaluation.report import (
    classification_metrics,
    plot_confusion_matrix,
    plot_misclassified_grid,
    write_html_report,
)
from tasks.training.curves import plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = ["a", "b", "c", "d"]

# Six examples over four classes. Row i = probabilities of example i.
Y_TRUE = np.array([0, 0, 1, 2, 3, 3])
Y_PROB = np.array(
    [
        [0.70, 0.10, 0.10, 0.10],  # true 0, pred 0
        [0.10, 0.50, 0.30, 0.10],  # true 0, pred 1, 0 is 3rd -> in top-3, not top-2
        [0.20, 0.60, 0.15, 0.05],  # true 1, pred 1
        [0.40, 0.30, 0.20, 0.10],  # true 2, pred 0, 2 is 3rd
        [0.10, 0.20, 0.30, 0.40],  # true 3, pred 3
        [0.05, 0.60, 0.30, 0.05],  # true 3, pred 1, 3 is last (tie with 0 at 0.05 -> index order)
    ]
)


def test_single_label_metrics_on_hand_made_example() -> None:
    metrics = classification_metrics(Y_TRUE, Y_PROB, top_k=3, class_names=NAMES)
    assert metrics["top1_accuracy"] == pytest.approx(3 / 6)
    # example 1: true 0 ranks 3rd -> hit; example 3: true 2 ranks 3rd -> hit; example 5: true 3 ranks 4th.
    assert metrics["top_k_accuracy"] == pytest.approx(5 / 6)
    assert metrics["confusion_matrix"] == [
        [1, 1, 0, 0],
        [0, 1, 0, 0],
        [1, 0, 0, 0],
        [0, 1, 0, 1],
    ]
    per_class = {row["class"]: row for row in metrics["per_class"]}
    assert per_class["a"] == {"class": "a", "precision": pytest.approx(1 / 2), "recall": 0.5, "f1": 0.5,
                              "support": 2}
    assert per_class["b"]["precision"] == pytest.approx(1 / 3) and per_class["b"]["recall"] == 1.0
    assert per_class["c"] == {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per_class["d"]["precision"] == 1.0 and per_class["d"]["recall"] == 0.5
    # recalls 1/2, 1, 0, 1/2; F1s 1/2, 1/2, 0, 2/3
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((1 / 2 + 1 / 2 + 0 + 2 / 3) / 4)
    assert "sequence_accuracy" not in metrics


def test_top_k_is_clipped_and_top2_differs() -> None:
    top2 = classification_metrics(Y_TRUE, Y_PROB, top_k=2, class_names=NAMES)
    assert top2["top_k_accuracy"] == pytest.approx(3 / 6)
    everything = classification_metrics(Y_TRUE, Y_PROB, top_k=10, class_names=NAMES)
    assert everything["top_k"] == 4 and everything["top_k_accuracy"] == 1.0


def test_multi_head_metrics() -> None:
    # Two sequences of three characters over classes a..d; one char wrong in the second sequence.
    y_true = np.array([[0, 1, 2], [3, 3, 0]])
    predicted = np.array([[0, 1, 2], [3, 2, 0]])
    y_prob = np.full((2, 3, 4), 0.1)
    for n in range(2):
        for h in range(3):
            y_prob[n, h, predicted[n, h]] = 0.7
    metrics = classification_metrics(y_true, y_prob, top_k=1, class_names=NAMES)
    assert metrics["char_accuracy"] == pytest.approx(5 / 6)
    assert metrics["sequence_accuracy"] == pytest.approx(1 / 2)
    assert metrics["per_head_accuracy"] == [1.0, 0.5, 1.0]
    assert metrics["num_heads"] == 3 and metrics["num_examples"] == 2
    cm = np.array(metrics["confusion_matrix"])
    assert cm.sum() == 6 and cm[3, 2] == 1 and cm[3, 3] == 1 and cm[0, 0] == 2


def test_metrics_reject_bad_shapes_and_labels() -> None:
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(Y_TRUE, Y_PROB, class_names=["a"])
    with pytest.raises(ValueError, match="got"):
        classification_metrics(Y_TRUE[:3], Y_PROB, class_names=NAMES)
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 9, 1, 1, 1, 1]), Y_PROB, class_names=NAMES)


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_confusion_matrix_small_and_large(tmp_path: Path) -> None:
    small = plot_confusion_matrix([[5, 1], [2, 7]], ["cat", "dog"], tmp_path / "cm10.png")
    assert_png(small)
    many = [f"c{i}" for i in range(60)]
    large = plot_confusion_matrix(np.eye(60, dtype=int) * 3, many, tmp_path / "cm60.png")
    assert_png(large)


def test_plot_misclassified_grid_single_and_multi_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    assert_png(plot_misclassified_grid(rgb, Y_TRUE[:5], np.array([0, 1, 1, 0, 3]), NAMES, tmp_path / "m.png"))
    grey = rng.integers(0, 256, (2, 8, 16, 1), dtype=np.uint8)
    strings = plot_misclassified_grid(
        grey, np.array([[0, 1], [2, 3]]), np.array([[0, 1], [2, 2]]), NAMES, tmp_path / "m2.png"
    )
    assert_png(strings)
    none_wrong = plot_misclassified_grid(rgb[:2], Y_TRUE[:2] * 0, Y_TRUE[:2] * 0, NAMES, tmp_path / "m3.png")
    assert_png(none_wrong)


def test_plot_training_curves_from_csv_logger_file(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,accuracy,learning_rate,loss,top3,val_accuracy,val_loss,val_top3\n"
        "0,0.5,0.001,1.2,0.8,0.45,1.3,0.7\n"
        "1,0.7,0.001,0.8,0.9,0.6,1.0,0.85\n"
    )
    assert_png(plot_training_curves(history, tmp_path / "curves.png"))
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,loss\n")
    with pytest.raises(ValueError, match="empty.csv"):
        plot_training_curves(empty, tmp_path / "never.png")


def test_html_report_is_self_contained(tmp_path: Path) -> None:
    metrics = classification_metrics(Y_TRUE, Y_PROB, top_k=3, class_names=NAMES)
    cm_png = plot_confusion_matrix(metrics["confusion_matrix"], NAMES, tmp_path / "cm.png")
    report = write_html_report(
        tmp_path / "report.html", title="CIFAR <test>", metrics=metrics, images={"Confusion": cm_png}
    )
    text = report.read_text()
    assert "data:image/png;base64," in text
    embedded = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert embedded is not None and base64.b64decode(embedded.group(1)) == cm_png.read_bytes()
    assert "CIFAR &lt;test&gt;" in text
    assert "top1_accuracy" in text and "0.5000" in text and "0.8333" in text
    assert "<th>precision</th>" in text and "<th>recall</th>" in text and "<th>support</th>" in text
    # No external assets: every src/href is a data URI.
    assert all(url.startswith("data:") for url in re.findall(r'(?:src|href)="([^"]*)"', text))


@pytest.mark.parametrize("heads", [1, 3])
def test_metrics_accumulated_over_batches_equal_the_whole(heads: int) -> None:
    from tasks.evaluation.report import MetricsAccumulator

    rng = np.random.default_rng(heads)
    count, names = 203, [f"c{i}" for i in range(7)]
    shape = (count,) if heads == 1 else (count, heads)
    y_true = rng.integers(0, 7, shape)
    y_prob = rng.random((*shape, 7))
    whole = classification_metrics(y_true, y_prob, top_k=3, class_names=names)
    accumulator = MetricsAccumulator(names, top_k=3, num_heads=heads)
    predictions = [accumulator.update(y_true[i:i + 50], y_prob[i:i + 50]) for i in range(0, count, 50)]
    batched = accumulator.result()
    assert batched.keys() == whole.keys()
    for key, value in whole.items():
        assert batched[key] == (pytest.approx(value) if isinstance(value, float) else value), key
    np.testing.assert_array_equal(np.concatenate(predictions), y_prob.argmax(-1))
    assert 0 < whole["top1_accuracy"] < whole["top_k_accuracy"] < 1
    with pytest.raises(ValueError, match="head"):
        accumulator.update(np.zeros((2, heads + 1), int), np.zeros((2, heads + 1, 7)))


def test_misclassified_sample_keeps_the_first_wrong_examples_across_batches() -> None:
    from tasks.evaluation.report import MisclassifiedSample

    sample = MisclassifiedSample(limit=3)
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    truth = np.zeros(10, int)
    sample.update(images[:5], truth[:5], np.array([0, 1, 0, 0, 2]))  # rows 1 and 4 wrong
    sample.update(images[5:], truth[5:], np.array([3, 3, 0, 0, 0]))  # rows 5 and 6 wrong: room for one
    kept, kept_true, kept_pred = sample.arrays((1, 1, 1), ())
    assert kept.ravel().tolist() == [1, 4, 5] and kept_pred.tolist() == [1, 2, 3] and kept_true.tolist() == [0, 0, 0]
    nothing = MisclassifiedSample().arrays((2, 2, 1), (4,))
    assert nothing[0].shape == (0, 2, 2, 1) and nothing[1].shape == (0, 4)


def test_metrics_json_names_the_npy_file_for_thousands_of_classes() -> None:
    from tasks.evaluation.task import MAX_JSON_CONFUSION_CLASSES, json_metrics

    small = classification_metrics(Y_TRUE, Y_PROB, top_k=3, class_names=NAMES)
    assert json_metrics(small) is small and "confusion_matrix" in small
    many = [f"c{i}" for i in range(MAX_JSON_CONFUSION_CLASSES + 1)]
    y_prob = np.eye(len(many))[[0, 5, 7]]
    large = json_metrics(classification_metrics(np.array([0, 5, 8]), y_prob, top_k=1, class_names=many))
    assert "confusion_matrix" not in large and large["confusion_matrix_file"] == "confusion_matrix.npy"
    assert large["top1_accuracy"] == pytest.approx(2 / 3) and len(large["per_class"]) == len(many)


def test_the_report_opens_with_the_model_health_and_its_curves(tmp_path: Path) -> None:
    from tasks.evaluation.health import assess
    from tasks.training.curves import plot_training_curves

    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.30,1.39,0.25,1.40\n1,0.31,1.38,0.25,1.39\n")
    confusion = np.zeros((4, 4), np.int64)
    confusion[:, 0] = 5
    health = assess(metric="top1_accuracy", value=0.25, confusion=confusion, class_names=NAMES, history=[
        {"accuracy": 0.30, "val_accuracy": 0.25, "val_loss": 1.40}, {"accuracy": 0.31, "val_accuracy": 0.25,
                                                                     "val_loss": 1.39}])
    metrics = {"top1_accuracy": 0.25, "health": health.to_json()}
    curves = plot_training_curves(history, tmp_path / "curves.png")
    text = write_html_report(tmp_path / "r.html", title="t", metrics=metrics, images={}, curves=curves).read_text()
    assert text.index("Model health") < text.index("Summary")
    assert "Do not trust this model: it did not learn." in text
    assert "did not learn: test top1_accuracy 0.250 is at chance level (0.250)" in text
    assert "3 of 4 classes in the test split are never predicted: b, c, d" in text
    assert text.index("Training curves") < text.index("Summary") and "data:image/png;base64," in text
