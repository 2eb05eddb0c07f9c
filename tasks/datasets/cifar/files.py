"""File names the CIFAR decode stage writes besides a decoded artifact's own (tasks/formats/files.py). Plain Python."""

from __future__ import annotations

COARSE_LABELS_FILE = "coarse_labels.txt"  # CIFAR-100: the 20 superclass names, ``index:name`` per line
