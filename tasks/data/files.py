"""File names the image-dirs and TFRecord stages write besides a decoded artifact's own (``labels.txt``,
``dataset_info.json``: tasks/formats/). Plain Python. TFRecord shard names: tasks/formats/tfrecord.py.

A TFRecord (examples) artifact is a TFDS shard folder: ``dataset_info.json`` there is TFDS's description, beside
TFDS's ``features.json`` and class-name file (tasks/data/tfds_metadata.py); tfpipe's own description of the
examples moves to ``TFPIPE_INFO_FILE``.
"""

from __future__ import annotations

SPLITS_FILE = "splits.json"  # image dirs: each output split's source split and example count
ROWS_SUFFIX = ".rows.npy"  # image dirs: ``<split>.rows.npy``, the source split's rows the split holds, in order
TFPIPE_INFO_FILE = "tfpipe_info.json"  # examples artifacts: tfpipe's DatasetInfo (shape, classes, heads, shards)
# TFDS's FeaturesDict of the records. The bottleneck stage's description of its vectors has the same name
# (tasks/features/files.py imports it): a different artifact, never a TFDS folder.
TFDS_FEATURES_FILE = "features.json"
# TFDS's ClassLabel names of the ``image/class/label`` feature, one a line, in index order.
TFDS_LABEL_NAMES_FILE = "image-class-label.labels.txt"
