"""File names the HWDB decode stage writes besides a decoded artifact's own (tasks/formats/files.py). Plain Python."""

from __future__ import annotations

CHAR_DICT_FILE = "char_dict.json"  # character -> class index, built from the training set's characters
