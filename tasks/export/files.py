"""File names the freeze and publish stages write. Plain Python (no TensorFlow, no Luigi).

A freeze artifact holds SAVED_MODEL_DIR, FROZEN_GRAPH_FILE, FROZEN_GRAPH_INFO_FILE, LABELS_FILE and a copy of
the trained MODEL_FILE; a published version (``published/<name>/<version>/``) holds the SavedModel's files at
its top (SAVED_MODEL_FILE...), the other files beside them, TRAINED_ON_FILE and its PUBLISH_RECORD_FILE. A
publish artifact holds PUBLISH_RECORD_FILE (the decision and its champion/challenger comparison),
PUBLISH_REPORT_FILE and, when a champion was compared, FLIPPED_GRID_FILE.
"""

from __future__ import annotations

# Declared in models/ (a freeze directory loads as a backbone by these two) and TensorFlow's SavedModel name.
from models.files import FROZEN_GRAPH_INFO_FILE as FROZEN_GRAPH_INFO_FILE
from models.files import MODEL_FILE as MODEL_FILE
from models.files import SAVED_MODEL_FILE as SAVED_MODEL_FILE

# The class names, copied on from the examples (declared in tasks/formats/files.py, which every stage shares).
from tasks.formats.files import LABELS_FILE as LABELS_FILE

# publish.json: declared in tasks/store/layout.py, a lower room, because gc reads it.
from tasks.store.layout import PUBLISH_RECORD_FILE as PUBLISH_RECORD_FILE

SAVED_MODEL_DIR = "saved_model"  # the serving SavedModel, signature serving_default(image_bytes) (tf.saved_model)
FROZEN_GRAPH_FILE = "frozen_graph.pb"  # the GraphDef with the variables folded into constants
# The files a published version takes from the freeze artifact, beside the SavedModel's own.
PUBLISHED_FILES = (LABELS_FILE, FROZEN_GRAPH_FILE, FROZEN_GRAPH_INFO_FILE)
# Written into a version when it is promoted: the ``image/sha256`` (hex, sorted, one a line) of the train split it
# learnt from, so a later comparison leaves those examples out of the champion's test.
TRAINED_ON_FILE = "trained_on_sha256.txt"

# The publish artifact, besides its publish.json.
PUBLISH_REPORT_FILE = "publish_report.html"  # the decision, both models' metrics, McNemar, per-class deltas
FLIPPED_GRID_FILE = "flipped_examples.png"  # test examples the champion got right and the new model wrong, and back

# published/<name>/ (tasks/store/layout.py PUBLISHED_DIR), besides the versions 1, 2, ...
CURRENT_LINK = "current"  # symlink to the version in service (TF Serving's model_base_path takes the folder)
PUBLISH_LOCK_FILE = ".lock"  # held while a version is promoted: one publisher of a name at a time
STAGING_PREFIX = ".staging-"  # ``.staging-<version>-<pid>``: a version being copied, renamed into place when whole
