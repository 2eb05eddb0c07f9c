"""File names of tfpipe artifacts that models/ reads: a freeze directory loaded as a backbone. Plain Python.

models/ imports nothing of tasks/, so the names it shares with the train and freeze stages are declared here,
and tasks/training/files.py and tasks/export/files.py import them from here. Changing one renames a file in
every artifact already on disk: don't.
"""

from __future__ import annotations

MODEL_FILE = "model.keras"  # the trained Keras model, images -> probabilities (Train writes it, Freeze keeps a copy)
FROZEN_GRAPH_INFO_FILE = "frozen_graph.json"  # the frozen graph's tensor names, image_shape, top_k, num_heads (Freeze)
SAVED_MODEL_FILE = "saved_model.pb"  # the graph at the top of a SavedModel directory (TensorFlow's own name)
