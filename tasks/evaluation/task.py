"""Evaluate stage: top-1/top-k, per-class precision/recall, confusion matrix, misclassified grid, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.data.files import TFPIPE_INFO_FILE
from tasks.data.split_sizes import check_split_sizes
from tasks.evaluation.files import (
    CONFUSION_MATRIX_FILE,
    CONFUSION_MATRIX_PLOT_FILE,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    REPORT_FILE,
)
from tasks.formats.files import LABELS_FILE
from tasks.store.task import ArtifactTask
from tasks.training.files import HISTORY_FILE, MODEL_FILE, TRAINING_CURVES_FILE


def predict_in_batches(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [np.asarray(model.predict_on_batch(images[i:i + batch_size].astype(np.float32) / 255.0))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float32)


MAX_JSON_CONFUSION_CLASSES = 100


def json_metrics(metrics: dict[str, Any], confusion_file: str = CONFUSION_MATRIX_FILE) -> dict[str, Any]:
    """The metrics as written to metrics.json: above MAX_JSON_CONFUSION_CLASSES classes (3,755 for HWDB:
    14M counts) the confusion matrix is named by its .npy file instead of inlined."""
    if metrics["num_classes"] <= MAX_JSON_CONFUSION_CLASSES:
        return metrics
    slim = {k: v for k, v in metrics.items() if k != "confusion_matrix"}
    slim["confusion_matrix_file"] = confusion_file
    return slim


class Evaluate(ArtifactTask):
    stage = "evaluate"
    version = 4
    reads = ("model", "examples")
    provides = "evaluation"

    dataset = luigi.Parameter(description="the dataset's name (the report's title)")
    dataset_metric = luigi.Parameter(default="top1_accuracy", description="the dataset's metric (metrics.json key), "
                                                                          "whose health the report judges")
    split = luigi.Parameter(default="test")
    top_k = luigi.IntParameter(default=3)
    batch_size = luigi.IntParameter(default=256, significant=False)

    def build(self, out_dir: Path) -> dict[str, Any]:
        from models.builders import load_trained_model
        from tasks.data.shards import iter_split_batches, load_dataset_info
        from tasks.evaluation.health import HEALTH_KEY, assess, read_history
        from tasks.evaluation.report import (
            MetricsAccumulator,
            MisclassifiedSample,
            plot_confusion_matrix,
            plot_misclassified_grid,
            write_html_report,
        )
        from tasks.formats.tfrecord import read_labels_txt

        shards, trained = self.input_dir("examples"), self.input_dir("model")
        class_names = read_labels_txt(shards / LABELS_FILE)
        info = load_dataset_info(shards)
        check_split_sizes(info, (self.split,))
        total = info.count(self.split)
        model = load_trained_model(trained / MODEL_FILE)
        # Streamed batch by batch: memory is one batch plus the confusion matrix, whatever the split's size.
        accumulator = MetricsAccumulator(class_names, top_k=self.top_k, num_heads=info.num_heads)
        wrong = MisclassifiedSample()
        for images, labels in iter_split_batches(shards, self.split, self.batch_size):
            probabilities = predict_in_batches(model, images, self.batch_size)
            wrong.update(images, labels, accumulator.update(labels, probabilities))
            self.report_progress(accumulator.examples, total, f"{self.split}: {accumulator.examples}/{total}")
        metrics = accumulator.result()
        metrics["split"] = self.split
        metrics["examples"] = int(accumulator.examples)
        if metrics["examples"] != total:
            raise ValueError(f"{shards}: split {self.split!r} yielded {metrics['examples']} examples, "
                             f"{TFPIPE_INFO_FILE} says {total}")
        np.save(out_dir / CONFUSION_MATRIX_FILE, accumulator.confusion)
        pictures = {
            "Confusion matrix": plot_confusion_matrix(accumulator.confusion, class_names,
                                                      out_dir / CONFUSION_MATRIX_PLOT_FILE),
            "Misclassified examples": plot_misclassified_grid(
                *wrong.arrays(info.image_shape, () if info.num_heads == 1 else (info.num_heads,)),
                class_names, out_dir / MISCLASSIFIED_FILE),
        }
        health = assess(metric=self.dataset_metric, value=float(metrics[self.dataset_metric]),
                        confusion=accumulator.confusion, class_names=class_names,
                        history=read_history(trained / HISTORY_FILE),
                        num_heads=info.num_heads)
        metrics[HEALTH_KEY] = health.to_json()
        metrics = json_metrics(metrics)
        (out_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        curves = None
        if (trained / TRAINING_CURVES_FILE).exists():
            curves = Path(shutil.copy(trained / TRAINING_CURVES_FILE, out_dir / TRAINING_CURVES_FILE))
        write_html_report(out_dir / REPORT_FILE, title=f"{self.dataset}: {self.split} evaluation",
                          metrics=metrics, images=pictures, curves=curves)
        headline = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return {"metrics": headline, "report_html": REPORT_FILE, HEALTH_KEY: {
            "learned": health.learned, "warnings": health.warnings}}
