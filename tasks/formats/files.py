"""File names every decode stage writes, and the stages after it copy or read. Plain Python (no numpy, no TF).

Declared in formats/, the lowest room, because several rooms write them: every dataset's decode stage, the
image-dirs, TFRecord, bottleneck and freeze stages (which copy ``labels.txt`` on), and several dataset folders,
which may not import one another. The other names of a decoded artifact live beside their format:
``dataset_info.json`` in tasks/formats/dataset_info.py, ``arrays.json`` in tasks/formats/arrays.py.
"""

from __future__ import annotations

LABELS_FILE = "labels.txt"  # the class names, ``index:name`` per line (tasks/formats/tfrecord.py write_labels_txt)
SKIPPED_FILE = "skipped.json"  # a decode stage's report of the inputs it left out, and why (images, hwdb)
EXTRACT_SCRATCH_DIR = ".extract"  # inside a decode stage's build directory: its unpacked source, removed when done
