"""Evaluating the published (champion) model and the new (challenger) one on the challenger's test split, for the
publish gate. No Luigi; TensorFlow is imported inside the functions that run a model.

Both models are run through their serving SavedModel (the champion's published files, the challenger's
``saved_model/``: exactly what gets published). Its signature takes encoded images, so a batch of the split's
uint8 pixels is PNG-encoded inside the graph (lossless) and decoded by the export's own ops, which only scale
images already at the model's size (``/ 255``, as Evaluate does): both models see Evaluate's pixels. A champion
made for another image size gets the pixels resized by its own serving graph.

A published version lists the content keys of the train split it learnt from (`TRAINED_ON_FILE`, written at
promote by `write_trained_on`); the comparison leaves those test examples out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tasks.data.shards import iter_decoded_records, load_dataset_info
from tasks.export.comparison import SplitExamples, compare
from tasks.export.files import FROZEN_GRAPH_INFO_FILE, LABELS_FILE, SAVED_MODEL_DIR, SAVED_MODEL_FILE, TRAINED_ON_FILE
from tasks.export.predict import INPUT_NAME, SERVING_SIGNATURE, read_labels
from tasks.formats.tfrecord import decode_example, read_records

TRAIN_SPLIT = "train"
PixelModel = Callable[[np.ndarray], np.ndarray]  # uint8 (B, H, W, C) -> probabilities (B, C) or (B, heads, C)
Rule = Callable[[dict[str, Any] | None], str]  # the gate: a comparison (None: no champion) -> '' or why not
Status = Callable[[str], None]


@dataclass(frozen=True)
class Champion:
    """The version in service: its number, its ``publish.json`` and the folder of its files on this host."""

    version: int
    record: dict[str, Any]
    directory: Path


@dataclass(frozen=True)
class Example:
    """One record of a split: pixels, label ((heads,) int64), key and content key (hex sha256)."""

    image: np.ndarray
    label: np.ndarray
    key: str
    digest: str


# ---- reading the examples -----------------------------------------------------------------------------------
def iter_examples(shards: Path, split: str) -> Iterator[Example]:
    """Every example of ``split`` in file order, with its ``image/sha256`` (iter_shard_examples gives no digest)."""
    for image, features in iter_decoded_records(shards, split):
        yield Example(image=image, label=np.asarray(features["image/class/label"], dtype=np.int64),
                      key=cast(bytes, features["image/key"][0]).decode("utf-8", "replace"),
                      digest=cast(bytes, features["image/sha256"][0]).decode("ascii"))


def split_digests(shards: Path, split: str = TRAIN_SPLIT) -> list[str]:
    """The content keys of a split, sorted and each once (reads the records, decodes no image)."""
    info = load_dataset_info(shards)
    digests = {cast(bytes, decode_example(record)["image/sha256"][0]).decode("ascii")
               for name in info.split(split).files for record in read_records(Path(shards) / name)}
    return sorted(digests)


def images_at(shards: Path, split: str, indices: list[int]) -> list[np.ndarray]:
    """The pixels of the examples at ``indices`` (positions in file order), in the order given."""
    wanted = set(indices)
    found = {i: example.image for i, example in enumerate(iter_examples(shards, split)) if i in wanted}
    return [found[i] for i in indices]


# ---- the trained-on list of a published version -----------------------------------------------------------------
def write_trained_on(path: Path, digests: list[str]) -> Path:
    """`TRAINED_ON_FILE`: one hex content key per line, sorted."""
    Path(path).write_text("".join(f"{digest}\n" for digest in sorted(digests)), encoding="ascii")
    return Path(path)


def read_trained_on(version_dir: Path) -> frozenset[str] | None:
    """The content keys a published version trained on; None for a version published without the list."""
    path = Path(version_dir) / TRAINED_ON_FILE
    if not path.is_file():
        return None
    return frozenset(line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip())


# ---- running a model on pixels ----------------------------------------------------------------------------------
def saved_model_dir(model_dir: Path) -> Path:
    """The SavedModel of a freeze artifact (``saved_model/``) or of a published version (its top)."""
    model_dir = Path(model_dir)
    if (model_dir / SAVED_MODEL_DIR / SAVED_MODEL_FILE).is_file():
        return model_dir / SAVED_MODEL_DIR
    if (model_dir / SAVED_MODEL_FILE).is_file():
        return model_dir
    raise FileNotFoundError(f"{model_dir}: no {SAVED_MODEL_FILE}: neither a freeze artifact nor a published version")


def pixel_model(model_dir: Path) -> PixelModel:
    """The serving model of ``model_dir`` as a function of uint8 pixel batches, through its bytes-in signature:
    each image PNG-encoded in the graph (stored, no compression: lossless and cheap)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir(model_dir)))
    serve = loaded.signatures[SERVING_SIGNATURE]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8)], autograph=False)
    def probabilities(pixels: tf.Tensor) -> tf.Tensor:
        encoded = tf.map_fn(lambda image: tf.io.encode_png(image, compression=0), pixels,
                            fn_output_signature=tf.TensorSpec([], tf.string))
        return serve(**{INPUT_NAME: encoded})["probabilities"]

    def run(images: np.ndarray) -> np.ndarray:
        _ = loaded  # the restored object owns the variables the signature reads
        return np.asarray(probabilities(tf.constant(images, dtype=tf.uint8)))

    return run


@dataclass(frozen=True)
class SplitPredictions:
    """A model's predicted classes (its own indices) on a split, with the split's examples."""

    examples: SplitExamples
    predicted: np.ndarray


def predict_split(model_dir: Path, shards: Path, split: str, batch_size: int) -> SplitPredictions:
    """Run the model of ``model_dir`` on every example of ``split``, ``batch_size`` at a time."""
    model = pixel_model(model_dir)
    keys: list[str] = []
    digests: list[str] = []
    labels: list[np.ndarray] = []
    predicted: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        predicted.append(model(np.stack(batch)).argmax(axis=-1))
        batch.clear()

    for example in iter_examples(shards, split):
        keys.append(example.key)
        digests.append(example.digest)
        labels.append(example.label)
        batch.append(example.image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not labels:
        raise ValueError(f"{shards}: split {split!r} holds no examples to compare the models on")
    label_array = np.stack(labels)
    squeeze = label_array.shape[1] == 1  # single-head: (N,), as the predictions are
    examples = SplitExamples(keys, digests, label_array[:, 0] if squeeze else label_array,
                            read_labels(Path(shards) / LABELS_FILE))
    return SplitPredictions(examples, np.concatenate(predicted).reshape(examples.labels.shape))


def model_class_names(model_dir: Path) -> list[str]:
    """``labels.txt`` of a freeze artifact or published version; a one-line error when it is missing."""
    path = Path(model_dir) / LABELS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing: the model's class names cannot be matched")
    return read_labels(path)


def model_image_shape(model_dir: Path) -> list[int] | None:
    """The image shape the model was exported for (``frozen_graph.json``), or None when unrecorded."""
    try:
        return [int(v) for v in json.loads((Path(model_dir) / FROZEN_GRAPH_INFO_FILE).read_text())["image_shape"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- the judge the publishers call ------------------------------------------------------------------------------
class ChampionJudge:
    """The publish gate with its comparison: called with the champion (None before the first publish), it compares
    the challenger with it on the challenger's test split, keeps that ``comparison`` (also when the gate then
    refuses) and returns the gate's ``rule`` on it. The challenger's predictions are computed once, however
    often a publisher that lost a race asks again about a newer champion."""

    def __init__(self, shards: Path, challenger: Path, *, split: str, metric: str, batch_size: int, rule: Rule,
                 status: Status = lambda message: None) -> None:
        self.shards, self.challenger, self.split = Path(shards), Path(challenger), split
        self.metric, self.batch_size, self.rule, self.status = metric, batch_size, rule, status
        self.comparison: dict[str, Any] | None = None
        self._challenger: SplitPredictions | None = None

    def __call__(self, champion: Champion | None) -> str:
        self.comparison = None if champion is None else self.compare(champion)
        return self.rule(self.comparison)

    def compare(self, champion: Champion) -> dict[str, Any]:
        if self._challenger is None:
            self.status(f"evaluating the new model on the {self.split} split")
            self._challenger = predict_split(self.challenger, self.shards, self.split, self.batch_size)
        self.status(f"evaluating published version {champion.version} on the same examples")
        theirs = predict_split(champion.directory, self.shards, self.split, self.batch_size)
        comparison = compare(self._challenger.examples, self._challenger.predicted, theirs.predicted,
                             model_class_names(champion.directory), champion_version=champion.version,
                             metric=self.metric, trained_on=read_trained_on(champion.directory))
        return {**comparison, "split": self.split, "champion_recorded_value": champion.record.get("value"),
                "champion_image_shape": model_image_shape(champion.directory)}
