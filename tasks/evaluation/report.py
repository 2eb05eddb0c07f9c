"""Evaluation metrics, plots and a self-contained HTML report (numpy + matplotlib Agg; no TensorFlow)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.evaluation.health import HEALTH_KEY, balanced_scores  # noqa: E402
from tasks.evaluation.plot_text import drawable_label  # noqa: E402
from tasks.runtime.figures import plt, save_figure, show_image
from tasks.runtime.html_page import embedded_png, html_page

MAX_TICK_LABELED_CLASSES = 40
MAX_HTML_CONFUSION_CLASSES = 20


# ---------------------------------------------------------------------------------------------------
# Metrics


def classification_metrics(
    y_true: np.ndarray, y_prob: np.ndarray, *, top_k: int = 3, class_names: list[str]
) -> dict[str, Any]:
    """Accuracy, top-k accuracy, per-class precision/recall/support and the confusion matrix.

    Single-label: ``y_true`` (N,) int, ``y_prob`` (N, C). Multi-head (captchas): ``y_true`` (N, H),
    ``y_prob`` (N, H, C); then every head's prediction counts as one character for top-1/top-k,
    per-class and confusion numbers, and ``char_accuracy``, ``sequence_accuracy`` (all heads right)
    and ``per_head_accuracy`` are added. Confusion rows are true classes, columns predicted ones.
    Precision of a class that is never predicted is reported as 0.0. Returns plain Python types
    (JSON-serialisable). The same numbers as ``MetricsAccumulator`` fed batch by batch.
    """
    y_true = np.asarray(y_true)
    accumulator = MetricsAccumulator(class_names, top_k=top_k, num_heads=y_true.shape[1] if y_true.ndim == 2 else 1)
    accumulator.update(y_true, y_prob)
    return accumulator.result()


class MetricsAccumulator:
    """``classification_metrics`` over batches: memory is the (C, C) confusion matrix, not N x C probabilities
    (the real HWDB test set is 224k images x 3,755 classes)."""

    def __init__(self, class_names: list[str], *, top_k: int = 3, num_heads: int = 1) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.num_heads = int(num_heads)
        self.top_k = max(1, min(int(top_k), self.num_classes))
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.examples = 0
        self.top_k_hits = 0
        self.head_correct = np.zeros(self.num_heads, dtype=np.int64)
        self.sequences_correct = 0

    def update(self, y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
        """Add a batch; returns its predicted classes ((N,) or (N, H))."""
        y_true = np.asarray(y_true)
        y_prob = np.asarray(y_prob, dtype=np.float64)
        _check_shapes(y_true, y_prob, self.class_names)
        heads = y_true.shape[1] if y_true.ndim == 2 else 1
        if heads != self.num_heads:
            raise ValueError(f"expected labels of {self.num_heads} head(s), got {heads}")
        flat_true = y_true.reshape(-1).astype(np.int64)
        flat_prob = y_prob.reshape(-1, self.num_classes)
        flat_pred = flat_prob.argmax(axis=-1)
        if flat_true.size and (flat_true.min() < 0 or flat_true.max() >= self.num_classes):
            raise ValueError(f"y_true holds labels outside 0..{self.num_classes - 1}")
        self.confusion += confusion_matrix(flat_true, flat_pred, self.num_classes)
        self.top_k_hits += int(_in_top_k(flat_true, flat_prob, self.top_k).sum())
        correct = (flat_pred == flat_true).reshape(len(y_true), heads)
        self.head_correct += correct.sum(axis=0)
        self.sequences_correct += int(correct.all(axis=1).sum())
        self.examples += int(len(y_true))
        return flat_pred.reshape(y_true.shape)

    def result(self) -> dict[str, Any]:
        characters = self.examples * self.num_heads
        metrics: dict[str, Any] = {
            "num_examples": self.examples,
            "num_classes": self.num_classes,
            "top_k": self.top_k,
            "top1_accuracy": _ratio(int(np.trace(self.confusion)), characters),
            "top_k_accuracy": _ratio(self.top_k_hits, characters),
            **balanced_scores(self.confusion),
            "per_class": _per_class_table(self.confusion, self.class_names),
            "confusion_matrix": self.confusion.tolist(),
        }
        if self.num_heads > 1:
            metrics["num_heads"] = self.num_heads
            metrics["char_accuracy"] = _ratio(int(self.head_correct.sum()), characters)
            metrics["sequence_accuracy"] = _ratio(self.sequences_correct, self.examples)
            metrics["per_head_accuracy"] = [_ratio(int(c), self.examples) for c in self.head_correct]
        return metrics


def _ratio(count: int, total: int) -> float:
    return count / total if total else 0.0


def _check_shapes(y_true: np.ndarray, y_prob: np.ndarray, class_names: list[str]) -> int:
    if y_true.ndim not in (1, 2) or y_prob.ndim != y_true.ndim + 1 or y_prob.shape[:-1] != y_true.shape:
        raise ValueError(
            f"expected y_true (N,) with y_prob (N, C), or (N, H) with (N, H, C); "
            f"got {y_true.shape} and {y_prob.shape}"
        )
    num_classes = int(y_prob.shape[-1])
    if num_classes != len(class_names):
        raise ValueError(f"y_prob has {num_classes} classes but {len(class_names)} class names were given")
    return num_classes


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return counts


def _in_top_k(y_true: np.ndarray, y_prob: np.ndarray, k: int) -> np.ndarray:
    """True where the true class is among the k highest probabilities (ties broken by class index)."""
    if y_true.size == 0:
        return np.zeros(0, dtype=bool)
    top = np.argsort(-y_prob, axis=-1, kind="stable")[:, :k]
    return (top == y_true[:, None]).any(axis=1)


def _per_class_table(confusion: np.ndarray, class_names: list[str]) -> list[dict[str, Any]]:
    true_positives = np.diag(confusion)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    rows = []
    for i, name in enumerate(class_names):
        precision = float(true_positives[i] / predicted[i]) if predicted[i] else 0.0
        recall = float(true_positives[i] / support[i]) if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": int(support[i])})
    return rows


# ---------------------------------------------------------------------------------------------------
# Plots


def plot_confusion_matrix(cm: Sequence[Sequence[int]] | np.ndarray, class_names: list[str], path: Path) -> Path:
    """Heat map of counts; labelled ticks and per-cell counts for small matrices, bare for > 40 classes."""
    counts = np.asarray(cm)
    n = counts.shape[0]
    side = min(4.0 + 0.45 * n, 16.0)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    try:
        image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix")
        if n <= MAX_TICK_LABELED_CLASSES:
            tick_labels = [drawable_label(name) for name in class_names]
            ax.set_xticks(range(n), labels=tick_labels, rotation=90 if n > 10 else 45, ha="right")
            ax.set_yticks(range(n), labels=tick_labels)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        if n <= 20:
            _annotate_cells(ax, counts)
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def _annotate_cells(ax: Any, counts: np.ndarray) -> None:
    threshold = counts.max() / 2 if counts.size else 0
    for (row, col), value in np.ndenumerate(counts):
        color = "white" if value > threshold else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=color, fontsize=8)


def plot_misclassified_grid(
    images_uint8: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str],
    path: Path,
    max_images: int = 36,
) -> Path:
    """Grid of up to ``max_images`` misclassified images titled ``true: X / pred: Y``.

    ``images_uint8`` is (N, H, W), (N, H, W, 1) or (N, H, W, 3); labels (N,) or (N, heads) for
    multi-head models, whose titles show the label strings (e.g. ``ABCD``). With no mistakes the
    figure says so.
    """
    images = np.asarray(images_uint8)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    wrong = _misclassified_indices(y_true, y_pred)[:max_images]
    cols = max(1, min(6, math.ceil(math.sqrt(len(wrong)))))
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    try:
        for ax in axes.ravel():
            ax.axis("off")
        if not wrong:
            axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        for ax, index in zip(axes.ravel(), wrong, strict=False):
            show_image(ax, images[index])
            truth = _label_text(y_true[index], class_names)
            guess = _label_text(y_pred[index], class_names)
            ax.set_title(f"true: {truth}\npred: {guess}", fontsize=8)
        fig.tight_layout()
        return save_figure(fig, path)
    finally:
        plt.close(fig)


class MisclassifiedSample:
    """The first ``limit`` misclassified examples of a stream of batches, for ``plot_misclassified_grid``."""

    def __init__(self, limit: int = 36) -> None:
        self.limit = limit
        self._images: list[np.ndarray] = []
        self._true: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []

    def update(self, images: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> None:
        room = self.limit - len(self._images)
        if room <= 0:
            return
        for index in _misclassified_indices(np.asarray(y_true), np.asarray(y_pred))[:room]:
            self._images.append(np.asarray(images[index]))
            self._true.append(np.asarray(y_true[index]))
            self._pred.append(np.asarray(y_pred[index]))

    def arrays(self, image_shape: tuple[int, ...],
               label_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(images, y_true, y_pred)``; empty arrays of the given shapes when nothing was wrong."""
        if not self._images:
            empty = np.zeros((0, *label_shape), dtype=np.int64)
            return np.zeros((0, *image_shape), dtype=np.uint8), empty, empty
        return np.stack(self._images), np.stack(self._true), np.stack(self._pred)


def _misclassified_indices(y_true: np.ndarray, y_pred: np.ndarray) -> list[int]:
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    differs = y_true != y_pred
    if differs.ndim == 2:
        differs = differs.any(axis=1)
    return [int(i) for i in np.flatnonzero(differs)]


def _label_text(label: np.ndarray | int, class_names: list[str]) -> str:
    """A label's class name (joined over heads), spelled so the plot's fonts can draw it."""
    label = np.asarray(label)
    if label.ndim == 0:
        return drawable_label(class_names[int(label)])
    return drawable_label("".join(class_names[int(i)] for i in label))


# ---------------------------------------------------------------------------------------------------
# HTML


def write_html_report(path: Path, *, title: str, metrics: dict[str, Any], images: dict[str, Path],
                      curves: Path | None = None) -> Path:
    """A single self-contained HTML file: the model's health (``metrics["health"]``, with the training
    ``curves``) first, then scalar metrics, per-class table, confusion table (<= 20 classes) and every image in
    ``images`` (caption -> PNG path) embedded as a base64 data URI."""
    parts = [
        *_health_section(metrics.get(HEALTH_KEY), curves),
        "<h2>Summary</h2>",
        _scalar_table(metrics),
    ]
    if metrics.get("per_class"):
        parts += ["<h2>Per class</h2>", _records_table(metrics["per_class"])]
    names = [row.get("class", str(i)) for i, row in enumerate(metrics.get("per_class") or [])]
    confusion = metrics.get("confusion_matrix")
    if confusion and len(confusion) <= MAX_HTML_CONFUSION_CLASSES and len(names) == len(confusion):
        parts += ["<h2>Confusion matrix (rows true, columns predicted)</h2>", _matrix_table(confusion, names)]
    for caption, image_path in images.items():
        parts += [f"<h2>{html.escape(caption)}</h2>", embedded_png(Path(image_path), caption)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_page(title, parts), encoding="utf-8")
    return path


HEALTH_ROWS = (
    ("metric", "test metric"), ("value", "test value"), ("chance_level", "chance level"),
    ("best_epoch", "best epoch (weights kept)"), ("epochs_completed", "epochs run"),
    ("train_accuracy", "train accuracy at the best epoch (per label)"),
    ("validation_accuracy", "validation accuracy at the best epoch (per label)"),
    ("train_validation_gap", "train - validation accuracy"), ("best_val_loss", "best validation loss"),
    ("loss_at_chance", "loss of a uniform guess (ln K)"),
)


def _health_section(health: dict[str, Any] | None, curves: Path | None) -> list[str]:
    """The verdict, its warnings, the numbers behind it and the training curves."""
    if not health:
        return [] if curves is None else ["<h2>Training curves</h2>", embedded_png(Path(curves), "Training curves")]
    warnings = health.get("warnings") or []
    if not health.get("learned", True):
        verdict = '<p class="verdict bad">Do not trust this model: it did not learn.</p>'
    elif warnings:
        verdict = '<p class="verdict warn">Usable, with the warnings below.</p>'
    else:
        verdict = '<p class="verdict good">Healthy: well above chance, no warning.</p>'
    parts = ["<h2>Model health</h2>", verdict]
    if warnings:
        parts.append("<ul class=\"warnings\">" + "".join(f"<li>{html.escape(w)}</li>" for w in warnings) + "</ul>")
    rows = "".join(f"<tr><th>{html.escape(label)}</th><td>{_format_value(health[key])}</td></tr>"
                   for key, label in HEALTH_ROWS if health.get(key) is not None)
    never = health.get("classes_never_predicted") or []
    rows += f"<tr><th>classes never predicted</th><td>{len(never)}</td></tr>"
    parts.append(f"<table>{rows}</table>")
    if curves is not None:
        parts += ["<h3>Training curves</h3>", embedded_png(Path(curves), "Training curves")]
    return parts




def _format_value(value: Any) -> str:
    if isinstance(value, float) and value and abs(value) < 1e-3:
        return f"{value:.2e}"  # a chance level of 26^-4 is not 0.0000
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return ", ".join(f"{v:.4f}" for v in value)
    return html.escape(str(value))


def _scalar_table(metrics: dict[str, Any]) -> str:
    skip = {"per_class", "confusion_matrix", HEALTH_KEY}
    rows = [
        f"<tr><th>{html.escape(str(key))}</th><td>{_format_value(value)}</td></tr>"
        for key, value in metrics.items()
        if key not in skip and not isinstance(value, dict)
    ]
    for key, value in metrics.items():
        if isinstance(value, dict) and key not in skip:
            rows += [
                f"<tr><th>{html.escape(f'{key}.{sub}')}</th><td>{_format_value(v)}</td></tr>"
                for sub, v in value.items()
            ]
    return "<table>" + "".join(rows) + "</table>"


def _records_table(records: list[dict[str, Any]]) -> str:
    header = list(records[0])
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_format_value(row.get(h, ''))}</td>" for h in header) + "</tr>" for row in records
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _matrix_table(matrix: list[list[int]], names: list[str]) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
    body = "".join(
        f"<tr><th>{html.escape(name)}</th>" + "".join(f"<td>{int(v)}</td>" for v in row) + "</tr>"
        for name, row in zip(names, matrix, strict=True)
    )
    return f"<table>{head}{body}</table>"
