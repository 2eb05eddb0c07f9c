"""File names the evaluate stage writes. Plain Python (no TensorFlow, no Luigi).

The artifact also holds a copy of the train artifact's TRAINING_CURVES_FILE (tasks/training/files.py), when
the model has one.
"""

from __future__ import annotations

METRICS_FILE = "metrics.json"  # top-1/top-k, per-class precision/recall, health, the confusion matrix (small sets)
REPORT_FILE = "report.html"  # the human-readable report: metrics, pictures, training curves, health warnings
CONFUSION_MATRIX_FILE = "confusion_matrix.npy"  # the confusion matrix, counts (true class x predicted class)
CONFUSION_MATRIX_PLOT_FILE = "confusion_matrix.png"  # the confusion matrix drawn
MISCLASSIFIED_FILE = "misclassified.png"  # a grid of misclassified test images with true and predicted labels
