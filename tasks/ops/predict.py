"""Predict labels for image files with a model exported by `tasks.ops.freeze.export_serving_model`.

TensorFlow is imported inside the functions, so importing this module (e.g. for ``tfpipe --help``)
stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAVED_MODEL_DIR = "saved_model"
LABELS_FILE = "labels.txt"
FROZEN_GRAPH_INFO_FILE = "frozen_graph.json"
SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"


@dataclass(frozen=True)
class Prediction:
    """One image's prediction.

    Single-label models: ``top`` is the top-k ``(label, probability)``, best first; ``text`` is None.
    Multi-head models (captchas): ``text`` is each head's argmax label concatenated, ``top`` holds each
    head's ``(label, probability)`` for that argmax, in head order, and ``head_top`` each head's top-k.
    """

    path: Path
    top: list[tuple[str, float]]
    text: str | None = None
    head_top: list[list[tuple[str, float]]] | None = None

    @property
    def label(self) -> str:
        """The predicted label: the top-1 class, or the concatenated text for a multi-head model."""
        return self.text if self.text is not None else self.top[0][0]


def read_labels(path: Path) -> list[str]:
    """Parse ``labels.txt`` (``index:name`` per line, indices 0..n-1 in any order)."""
    by_index: dict[int, str] = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        index_text, sep, name = line.partition(":")
        if not sep or not index_text.strip().isdigit():
            raise ValueError(f"{path}: line {line_no}: expected 'index:name', got {line!r}")
        index = int(index_text)
        if index in by_index:
            raise ValueError(f"{path}: line {line_no}: index {index} appears twice")
        by_index[index] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{path}: class indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


class Predictor:
    """A loaded serving model with its class names; see `load_predictor`."""

    def __init__(
        self, serve: Any, class_names: list[str], *, channels: int, top_k: int = 3, owner: Any = None
    ) -> None:
        self._serve = serve
        self._owner = owner  # the restored SavedModel object; keeps its variables alive with the signature
        self.class_names = class_names
        self.channels = channels
        self.top_k = top_k
        self._check_decodes = _make_decode_check(channels)

    def predict(self, paths: Sequence[Path], *, batch_size: int = 64) -> list[Prediction]:
        """Predict every file in ``paths``, in order, running the model ``batch_size`` images at a time.

        Every file is read and its bytes test-decoded before any batch runs, so an unreadable or
        corrupt file raises ValueError naming that file instead of failing a whole batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        paths = [Path(p) for p in paths]
        encoded = [self._read_checked(path) for path in paths]
        predictions: list[Prediction] = []
        for start, chunk in _chunks(encoded, batch_size):
            probabilities = self.run_batch(chunk)
            batch_paths = paths[start : start + len(chunk)]
            for path, probs in zip(batch_paths, probabilities, strict=True):
                predictions.append(self._to_prediction(path, probs))
        return predictions

    def run_batch(self, encoded_images: list[bytes]) -> Any:
        """Probabilities (numpy) for already-checked encoded images: (B, C) or (B, heads, C)."""
        import tensorflow as tf

        outputs = self._serve(**{INPUT_NAME: tf.constant(encoded_images, dtype=tf.string)})
        return outputs["probabilities"].numpy()

    def _read_checked(self, path: Path) -> bytes:
        import tensorflow as tf

        try:
            data = path.read_bytes()
        except OSError as err:
            raise ValueError(f"{path}: cannot read image file: {err.strerror or err}") from err
        try:
            self._check_decodes(tf.constant(data, dtype=tf.string))
        except tf.errors.InvalidArgumentError as err:
            raise ValueError(f"{path}: not a decodable PNG/JPEG/BMP/GIF image: {err.message}") from err
        return data

    def _to_prediction(self, path: Path, probabilities: Any) -> Prediction:
        if probabilities.ndim == 1:
            return Prediction(path=path, top=self._top_labels(probabilities, self.top_k))
        head_top = [self._top_labels(head, self.top_k) for head in probabilities]
        text = "".join(top[0][0] for top in head_top)
        return Prediction(path=path, top=[top[0] for top in head_top], text=text, head_top=head_top)

    def _top_labels(self, probabilities: Any, top_k: int) -> list[tuple[str, float]]:
        order = probabilities.argsort(kind="stable")[::-1][: min(top_k, len(probabilities))]
        return [(self.class_names[i], float(probabilities[i])) for i in order]


def _make_decode_check(channels: int) -> Any:
    """A compiled function decoding one image exactly as the exported graph does (raises if it can't)."""
    import tensorflow as tf

    from tasks.ops.freeze import decode_pixels

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def check(encoded: tf.Tensor) -> tf.Tensor:
        return tf.shape(decode_pixels(encoded, channels))

    return check


def _chunks(items: list[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


def load_predictor(model_dir: Path) -> Predictor:
    """Load ``model_dir/saved_model`` and ``model_dir/labels.txt`` written by export_serving_model."""
    import tensorflow as tf

    model_dir = Path(model_dir)
    class_names = read_labels(model_dir / LABELS_FILE)
    saved_model_dir = model_dir / SAVED_MODEL_DIR
    if not saved_model_dir.is_dir():
        raise FileNotFoundError(f"{saved_model_dir}: no SavedModel directory")
    loaded = tf.saved_model.load(str(saved_model_dir))
    serve = loaded.signatures[SERVING_SIGNATURE]
    num_classes = int(serve.structured_outputs["probabilities"].shape[-1])
    if num_classes != len(class_names):
        raise ValueError(
            f"{model_dir}: model has {num_classes} classes but labels.txt lists {len(class_names)}"
        )
    info = _read_export_info(model_dir)
    return Predictor(
        serve, class_names, channels=int(info["image_shape"][2]), top_k=int(info["top_k"]), owner=loaded
    )


def _read_export_info(model_dir: Path) -> dict[str, Any]:
    """``frozen_graph.json``: image_shape (for the channel count used to test-decode files) and top_k."""
    path = model_dir / FROZEN_GRAPH_INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return {"image_shape": list(info["image_shape"]), "top_k": int(info["top_k"])}
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed export info: {err}") from err


def format_predictions(predictions: Sequence[Prediction]) -> str:
    """Lines a human reads: ``path: label (0.93), label2 (0.04), ...`` or ``path: ABCD (A 0.99, ...)``."""
    return "\n".join(_format_one(p) for p in predictions)


def _format_one(prediction: Prediction) -> str:
    if prediction.text is None:
        ranked = ", ".join(f"{label} ({prob:.2f})" for label, prob in prediction.top)
        return f"{prediction.path}: {ranked}"
    per_char = ", ".join(f"{label} {prob:.2f}" for label, prob in prediction.top)
    return f"{prediction.path}: {prediction.text} ({per_char})"
