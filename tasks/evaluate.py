"""Evaluate stage: top-1/top-k, per-class precision/recall, confusion matrix, misclassified grid, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.base import ArtifactTask
from tasks.datasets import DatasetChain
from tasks.tfrecords import TFRecords
from tasks.train import MODEL_FILE, Train


def predict_in_batches(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    outputs = [np.asarray(model.predict_on_batch(images[i:i + batch_size].astype(np.float32) / 255.0))
               for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs).astype(np.float32)


class Evaluate(DatasetChain, ArtifactTask):
    stage = "evaluate"
    version = 1

    split = luigi.Parameter(default="test")
    top_k = luigi.IntParameter(default=3)
    batch_size = luigi.IntParameter(default=256, significant=False)

    def requires(self) -> dict[str, ArtifactTask]:
        return {"train": Train(**self.chain()), "tfrecords": TFRecords(**self.chain())}

    def build(self, out_dir: Path) -> dict[str, Any]:
        import keras

        from tasks.formats.tfrecord import read_labels_txt
        from tasks.ops.report import (
            classification_metrics,
            plot_confusion_matrix,
            plot_misclassified_grid,
            write_html_report,
        )
        from tasks.ops.shards import load_split_arrays

        shards, trained = self.input_dir("tfrecords"), self.input_dir("train")
        class_names = read_labels_txt(shards / "labels.txt")
        images, labels = load_split_arrays(shards, self.split)
        model = keras.models.load_model(trained / MODEL_FILE, compile=False)
        probabilities = predict_in_batches(model, images, self.batch_size)
        metrics = classification_metrics(labels, probabilities, top_k=self.top_k, class_names=class_names)
        metrics["split"] = self.split
        metrics["examples"] = int(len(labels))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        pictures = {
            "Confusion matrix": plot_confusion_matrix(metrics["confusion_matrix"], class_names,
                                                      out_dir / "confusion_matrix.png"),
            "Misclassified examples": plot_misclassified_grid(images, labels, probabilities.argmax(-1),
                                                              class_names, out_dir / "misclassified.png"),
        }
        if (trained / "training_curves.png").exists():
            shutil.copy(trained / "training_curves.png", out_dir / "training_curves.png")
            pictures["Training curves"] = out_dir / "training_curves.png"
        write_html_report(out_dir / "report.html", title=f"{self.dataset}: {self.split} evaluation",
                          metrics=metrics, images=pictures)
        headline = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        return {"metrics": headline, "report_html": "report.html"}
