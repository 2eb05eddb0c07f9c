"""File names of a model card, written beside ``saved_model.pb`` in every published version. Plain Python (no
TensorFlow, no Luigi).
"""

from __future__ import annotations

MODEL_CARD_FILE = "model_card.json"  # the card, following the Model Card Toolkit's JSON schema v0.0.2
MODEL_CARD_HTML_FILE = "model_card.html"  # the same card as a self-contained page for people
# The card's files in the order they are written (and uploaded, before saved_model.pb).
MODEL_CARD_FILES = (MODEL_CARD_FILE, MODEL_CARD_HTML_FILE)
