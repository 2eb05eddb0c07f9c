"""File names the datacheck stage writes. Plain Python (no TensorFlow, no Luigi).

A datacheck artifact holds the checked examples (the TFRecord shards, ``labels.txt`` and the examples'
descriptions, as the TFRecord stage wrote them, or rewritten without the examples a ``drop`` policy removed),
DATACHECK_FILE (the statistics and findings; schema in docs/DATACHECK.md), DATA_REPORT_FILE and its pictures.
"""

from __future__ import annotations

DATACHECK_FILE = "datacheck.json"  # statistics per split, findings, what each policy did (docs/DATACHECK.md)
DATA_REPORT_FILE = "data_report.html"  # the findings for people: tables and the pictures below
CLASS_HISTOGRAM_FILE = "class_histogram.png"  # examples per class, one series per split
SAMPLE_GRID_FILE = "samples.png"  # a few examples of each class (the first classes, for thousands of classes)
PAIRS_FILE = "pairs.png"  # leaks, label conflicts, duplicates and near duplicates, the two images side by side
SIZES_FILE = "original_sizes.png"  # the source images' heights and widths, where the decoder recorded them
