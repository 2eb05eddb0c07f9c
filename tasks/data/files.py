"""File names the image-dirs and TFRecord stages write besides a decoded artifact's own (``labels.txt``,
``dataset_info.json``: tasks/formats/). Plain Python. TFRecord shard names: tasks/formats/tfrecord.py.
"""

from __future__ import annotations

SPLITS_FILE = "splits.json"  # image dirs: each output split's source split and example count
ROWS_SUFFIX = ".rows.npy"  # image dirs: ``<split>.rows.npy``, the source split's rows the split holds, in order
