"""File names the bottleneck stage writes, in its artifact and in the feature cache. Plain Python.

An artifact holds, per split ``<name>`` (``train``, ``test``, ``train.view1``...), ``<name>.features.npy``,
``<name>.labels.npy`` and ``<name>.keys.npy``, plus ``features.json`` (and ``labels.txt``,
``dataset_info.json``: tasks/formats/). A cache pack under ``.cache/features/<namespace>/`` is a
``<pack>.features.npy`` and ``<pack>.keys.npy`` pair (tasks/features/cache.py).
"""

from __future__ import annotations

from tasks.data.files import TFDS_FEATURES_FILE

# Feature width, views, backbone, input range and why, examples per split. Named like TFDS's ``features.json`` of a
# shard folder, whose declaration it shares (a file name is declared once); this artifact is no TFDS folder.
FEATURES_INFO_FILE = TFDS_FEATURES_FILE
FEATURES_SUFFIX = ".features.npy"  # (N, D) float32 feature vectors
LABELS_SUFFIX = ".labels.npy"  # the examples' labels, in the same order
KEYS_SUFFIX = ".keys.npy"  # (N,) S32 content keys (sha256 of the decoded pixels), in the same order
