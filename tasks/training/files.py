"""File names the train stage writes: its artifact, its resumable work directory, the cluster rendezvous.
Plain Python (no TensorFlow, no Luigi). Changing one renames a file in every artifact already on disk: don't.
"""

from __future__ import annotations

# The trained model: declared in models/, which loads a freeze directory's copy of it; re-exported from here.
from models.files import MODEL_FILE as MODEL_FILE

# The artifact, <root>/train/Train-<key>/ (besides MODEL_FILE).
HEAD_FILE = "head.keras"  # with bottleneck features: the head alone (MODEL_FILE is backbone + head)
HISTORY_FILE = "history.csv"  # one row per epoch, Keras CSVLogger's columns (also kept in the work directory)
TRAINING_CURVES_FILE = "training_curves.png"  # the history plotted, one panel per metric (tasks/training/curves.py)
TRAIN_INFO_FILE = "train_info.json"  # the model's name, image shape, budget and choices the run trained with
TENSORBOARD_DIR = "tensorboard"  # TensorBoard event files (also in the work directory while training)

# The work directory, <root>/train/.work/Train-<key>/: what a killed run resumes from; never an artifact.
WORK_DIR = ".work"  # beside the train stage's artifacts
BACKUP_DIR = "backup"  # Keras BackupAndRestore's state, and the dropout seed states beside it
BACKUP_METADATA_FILE = "training_metadata.json"  # in BACKUP_DIR: the epochs finished (Keras's own name)
BEST_WEIGHTS_FILE = "best.weights.h5"  # the weights of the best validation loss so far
CHECKPOINTS_DIR = "checkpoints"  # the custom loop's tf.train checkpoints (parameter-server runs)
FINE_TUNE_DIR = "fine_tune"  # the second phase of a bottleneck run (backbone layers unfrozen): its own work dir

# The cluster rendezvous, <root>/.cluster/<Train task>/ (tasks/training/cluster.py).
CHIEF_FILE = "chief.json"  # the chief's run id: written when Train's inputs are complete
GO_FILE = "go.json"  # every member answered: train
DONE_FILE = "done.json"  # the chief's run ended: its run id, success or the error
