"""Predict labels for image files with a model exported by `tasks.export.freeze.export_serving_model`.

Bad files never fail a batch: `Predictor.check_images` reads every file and returns the good ones with
their bytes and a `BadImage` (path and a one-line reason) for each of the others; `predict_encoded` gives
the good ones' predictions. `predict` does both and raises `BadImagesError` listing every bad file.

Each image is decoded once. The check IS the prediction: `check_images` runs the serving signature (whose
graph decodes the bytes with `tasks.export.freeze.decode_pixels`) on batches of the files that pass the
cheap checks (missing, unreadable, not a regular file, empty), and keeps each good image's probabilities
for `predict_encoded`, which hands them back without running the model again. Only when a batch fails
(some file in it is undecodable; rare) is each of that batch's images test-decoded on its own by a
compiled function made of the same `decode_pixels`, to name the bad ones and their reasons; the others
of that batch are then run again as one batch. Files are read by a small thread pool, ahead of the
model.

Truncated files: TensorFlow's decoders (2.21) reject a JPEG cut anywhere before its end-of-image marker
and a PNG cut anywhere (reported as "truncated JPEG ..." / "not a decodable image: ..."). A file the
decoder does accept although incomplete (a GIF missing only its trailer byte, a zero-padded BMP, or a
truncated JPEG on a TF build that recovers truncated data) passes the check and is predicted from exactly
the pixels the serving graph decodes: the check and the prediction never disagree about a file.

TensorFlow is imported inside the functions, so importing this module (e.g. for ``tfpipe --help``)
stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.export.files import FROZEN_GRAPH_INFO_FILE, LABELS_FILE, SAVED_MODEL_DIR, SAVED_MODEL_FILE

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"
MAX_REASON_CHARS = 200
READ_WORKERS = 2  # threads reading files ahead of the model
READ_GROUP_MIN = 16  # files per read task, at least (more with a bigger batch)
JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
# TF decorations in an error message: {{node x}}, {{function_node x}}, [[...]], [Op:X] name: y
_TF_DECORATION = re.compile(r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\](?:\s*name:\s*\S*)?")


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


@dataclass(frozen=True)
class BadImage:
    """A file that cannot be predicted and why, as one short line (no TensorFlow graph context)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class BadImagesError(ValueError):
    """Some files cannot be predicted; ``bad`` lists every one of them, in input order."""

    def __init__(self, bad: Sequence[BadImage]) -> None:
        self.bad = tuple(bad)
        count = len(self.bad)
        super().__init__(f"{count} bad image file{'s' if count != 1 else ''}:\n{format_bad_images(self.bad)}")


def format_bad_images(bad: Sequence[BadImage]) -> str:
    """One ``path: reason`` line per bad file."""
    return "\n".join(str(item) for item in bad)


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
    """A loaded serving model with its class names; see `load_predictor`.

    `check_images` keeps the probabilities it computed on the instance (the most recent call's only) for
    `predict_encoded` to hand back; threads sharing a Predictor get correct results, but may make it run
    the model on an image twice.
    """

    def __init__(
        self,
        serve: Any,
        class_names: list[str],
        *,
        channels: int,
        top_k: int = 3,
        owner: Any = None,
        read_workers: int = READ_WORKERS,
    ) -> None:
        self._serve = serve
        self._owner = owner  # the restored SavedModel object; keeps its variables alive with the signature
        self.class_names = class_names
        self.channels = channels
        self.top_k = top_k
        self.read_workers = read_workers
        self._check_decodes = _make_decode_check(channels)
        # id(bytes) -> (that bytes object, its probabilities), from the last check_images. Holding the
        # object keeps its id from being reused while the entry exists.
        self._checked: dict[int, tuple[bytes, Any]] = {}

    def predict(self, paths: Sequence[Path], *, batch_size: int = 64) -> list[Prediction]:
        """Predict every file in ``paths``, in order, running the model ``batch_size`` images at a time.

        Every file is checked before any prediction is returned (`check_images`); if any is bad, raises
        `BadImagesError` listing all of them and predicts none.
        """
        _check_batch_size(batch_size)
        good, bad = self.check_images(paths, batch_size=batch_size)
        if bad:
            raise BadImagesError(bad)
        return self.predict_encoded(good, batch_size)

    def check_images(
        self, paths: Sequence[Path], *, batch_size: int = 64
    ) -> tuple[list[tuple[Path, bytes]], list[BadImage]]:
        """Read and decode every file: ``(good, bad)``, each in input order.

        ``good`` holds ``(path, encoded bytes)`` for `predict_encoded`; ``bad`` a `BadImage` for each file
        that is missing, unreadable, a directory or other non-regular file, empty, or not decodable by the
        serving graph (corrupt or truncated). Nothing is raised for a bad file.

        The check is the serving signature itself, run ``batch_size`` images at a time: each good image's
        probabilities are kept, so `predict_encoded` on ``good`` (the same bytes objects) runs nothing
        again, and each image is decoded once. The model thus runs here, also when the caller then
        predicts nothing; the kept results are the last call's only, each handed back once.
        """
        _check_batch_size(batch_size)
        good: list[tuple[Path, bytes]] = []
        bad: list[tuple[int, BadImage]] = []
        checked: dict[int, tuple[bytes, Any]] = {}
        pending: list[tuple[int, Path, bytes]] = []
        for index, (path, data, reason) in enumerate(self._read_files(paths, batch_size)):
            if reason is not None:
                bad.append((index, BadImage(path, reason)))
                continue
            pending.append((index, path, data))
            if len(pending) == batch_size:
                self._check_batch(pending, good, bad, checked)
                pending = []
        if pending:
            self._check_batch(pending, good, bad, checked)
        self._checked = checked
        bad.sort(key=lambda item: item[0])  # a failed batch's bad files come after later cheap-check ones
        return good, [item for _, item in bad]

    def predict_encoded(self, items: Sequence[tuple[Path, bytes]], batch_size: int = 64) -> list[Prediction]:
        """Predict ``(path, encoded bytes)`` pairs from `check_images`, in order, ``batch_size`` at a time.

        Bytes objects the last `check_images` call returned get the probabilities it computed (the model
        is not run again; ``batch_size`` applies to the others). Bytes that were not checked and turn out
        undecodable raise `BadImagesError` naming the bad ones of the failing batch (none of that batch
        is predicted).
        """
        _check_batch_size(batch_size)
        items = [(_as_path(path), data) for path, data in items]
        probabilities: list[Any] = [None] * len(items)
        unchecked: list[tuple[int, Path, bytes]] = []
        for index, (path, data) in enumerate(items):
            entry = self._checked.pop(id(data), None)
            if entry is not None and entry[0] is data:
                probabilities[index] = entry[1]
            else:
                unchecked.append((index, path, data))
        for start in range(0, len(unchecked), batch_size):
            chunk = unchecked[start : start + batch_size]
            batch = self._run_checked_batch([(path, data) for _, path, data in chunk])
            for (index, _, _), probs in zip(chunk, batch, strict=True):
                probabilities[index] = probs
        return self._to_predictions([path for path, _ in items], probabilities)

    def run_batch(self, encoded_images: list[bytes]) -> Any:
        """Probabilities (numpy) for already-checked encoded images: (B, C) or (B, heads, C)."""
        import tensorflow as tf

        outputs = self._serve(**{INPUT_NAME: tf.constant(encoded_images, dtype=tf.string)})
        return outputs["probabilities"].numpy()

    def _check_batch(
        self,
        pending: list[tuple[int, Path, bytes]],
        good: list[tuple[Path, bytes]],
        bad: list[tuple[int, BadImage]],
        checked: dict[int, tuple[bytes, Any]],
    ) -> None:
        """Run one batch of cheap-checked files; on failure name its undecodable ones and rerun the rest."""
        import tensorflow as tf

        try:
            probabilities = self.run_batch([data for _, _, data in pending])
        except tf.errors.OpError:
            problems = [self._decode_problem(data) for _, _, data in pending]
            if not any(problems):
                raise
            survivors = []
            for (index, path, data), problem in zip(pending, problems, strict=True):
                if problem is None:
                    survivors.append((index, path, data))
                else:
                    bad.append((index, BadImage(path, problem)))
            pending = survivors
            probabilities = self.run_batch([data for _, _, data in pending]) if pending else []
        for (_, path, data), probs in zip(pending, probabilities, strict=True):
            good.append((path, data))
            checked[id(data)] = (data, probs)

    def _run_checked_batch(self, chunk: list[tuple[Path, bytes]]) -> Any:
        import tensorflow as tf

        try:
            return self.run_batch([data for _, data in chunk])
        except tf.errors.OpError:
            bad = [BadImage(path, reason) for path, data in chunk if (reason := self._decode_problem(data))]
            if bad:
                raise BadImagesError(bad) from None
            raise

    def _read_files(self, paths: Sequence[Path], batch_size: int) -> Iterator[tuple[Path, bytes, str | None]]:
        """``(path, bytes, None)`` or ``(path, b"", reason)`` per file, in order, read ahead by a thread pool.

        Files are read in groups (one pool task each) so the model runs on one batch while the next
        ones are read: TensorFlow releases the GIL while it runs.
        """
        paths = [_as_path(path) for path in paths]
        size = max(batch_size, READ_GROUP_MIN)
        groups = [paths[start : start + size] for start in range(0, len(paths), size)]
        if len(groups) <= 1 or self.read_workers < 1:
            for group in groups:
                yield from _read_group(group)
            return
        pool = ThreadPoolExecutor(max_workers=self.read_workers, thread_name_prefix="tfpipe-read")
        try:
            for results in pool.map(_read_group, groups):
                yield from results
        finally:  # also when the caller stops early (an error): groups not started yet are not read
            pool.shutdown(wait=True, cancel_futures=True)

    def _decode_problem(self, data: bytes) -> str | None:
        """None if the serving graph's decode accepts ``data``, else a one-line reason."""
        import tensorflow as tf

        try:
            self._check_decodes(tf.constant(data, dtype=tf.string))
        except tf.errors.OpError as err:
            detail = tf_error_line(err.message)
            if data.startswith(JPEG_START) and not data.rstrip(b"\0").endswith(JPEG_END):
                return _clip(f"truncated JPEG (no end-of-image marker): {detail}")
            return _clip(f"not a decodable image: {detail}")
        return None

    def _to_predictions(self, paths: list[Path], rows: list[Any]) -> list[Prediction]:
        """One `Prediction` per probability row ((C,) or (heads, C)), top-k ranked for all rows at once."""
        import numpy as np

        if not rows:
            return []
        probabilities = np.stack(rows)
        top_k = min(self.top_k, probabilities.shape[-1])
        # best first; among equal probabilities the higher class index first (a stable sort, reversed)
        order = probabilities.argsort(axis=-1, kind="stable")[..., ::-1][..., :top_k]
        ranked = np.take_along_axis(probabilities, order, axis=-1).tolist()
        names = self.class_names
        if probabilities.ndim == 2:
            return [
                Prediction(path=path, top=[(names[i], p) for i, p in zip(indices, probs, strict=True)])
                for path, indices, probs in zip(paths, order.tolist(), ranked, strict=True)
            ]
        predictions = []
        for path, head_indices, head_probs in zip(paths, order.tolist(), ranked, strict=True):
            head_top = [
                [(names[i], p) for i, p in zip(indices, probs, strict=True)]
                for indices, probs in zip(head_indices, head_probs, strict=True)
            ]
            text = "".join(top[0][0] for top in head_top)
            predictions.append(Prediction(path=path, top=[top[0] for top in head_top], text=text, head_top=head_top))
        return predictions


def _as_path(path: Any) -> Path:
    return path if isinstance(path, Path) else Path(path)  # Path(a_path) parses it all again


def _read_group(paths: list[Path]) -> list[tuple[Path, bytes, str | None]]:
    return [(path, *_read_file(path)) for path in paths]


def _read_file(path: Path) -> tuple[bytes, str | None]:
    """The file's bytes and None, or ``b""`` and the one-line reason it cannot be predicted (no TF)."""
    try:
        info = os.stat(path)
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            return b"", "is a directory, not an image file"
        if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
            return b"", "not a regular file"
        data = _read_whole(path, info.st_size)
    except OSError as err:
        return b"", f"cannot read: {err.strerror or err}"
    if not data:
        return b"", "empty file (0 bytes)"
    return data, None


def _read_whole(path: Path, size_hint: int) -> bytes:
    """All of a regular file's bytes: os.open/os.read, half the cost of ``Path.read_bytes`` per small file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))  # not inherited by children (PEP 446)
    try:
        data = os.read(fd, size_hint + 1)
        if not data:
            return data
        parts = [data]
        while chunk := os.read(fd, 1 << 16):  # until end of file: it may have grown, or a read come short
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _make_decode_check(channels: int) -> Any:
    """A compiled function decoding one image exactly as the exported graph does (raises if it can't)."""
    import tensorflow as tf

    from tasks.export.freeze import decode_pixels

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def check(encoded: tf.Tensor) -> tf.Tensor:
        return tf.shape(decode_pixels(encoded, channels))

    return check


def tf_error_line(message: str) -> str:
    """The one line of a TensorFlow error message that says what went wrong.

    Graph-mode messages open with "Graph execution error:" and a "Detected at node ... defined at"
    Python stack, and end with ``[[{{node ...}}]] [Op:...]``; eager ones wrap the text in
    ``{{function_node ...}} ... [Op:X] name:``. All of that is dropped.
    """
    in_stack = False
    for line in message.splitlines():
        text = line.strip()
        if not text or text.startswith("Graph execution error"):
            continue
        if text.startswith("Detected at node") or text.startswith("Detected in"):
            in_stack = True
            continue
        if in_stack and line[:1].isspace():  # the stack's indented "File ..." and source lines
            continue
        in_stack = False
        cleaned = " ".join(_TF_DECORATION.sub(" ", text).split())
        if cleaned:
            return cleaned
    return "decode failed"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def load_predictor(model_dir: Path) -> Predictor:
    """Load ``model_dir/saved_model`` and ``model_dir/labels.txt`` written by export_serving_model."""
    import tensorflow as tf

    model_dir = Path(model_dir)
    class_names = read_labels(model_dir / LABELS_FILE)
    saved_model_dir = model_dir / SAVED_MODEL_DIR
    if not saved_model_dir.is_dir() and (model_dir / SAVED_MODEL_FILE).is_file():
        saved_model_dir = model_dir  # a published version: the SavedModel's files at its top
    if not saved_model_dir.is_dir():
        raise FileNotFoundError(f"{saved_model_dir}: no SavedModel directory")
    loaded = tf.saved_model.load(str(saved_model_dir))
    serve = loaded.signatures[SERVING_SIGNATURE]
    num_classes = int(serve.structured_outputs["probabilities"].shape[-1])
    if num_classes != len(class_names):
        raise ValueError(
            f"{model_dir}: model has {num_classes} classes but {LABELS_FILE} lists {len(class_names)}"
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
