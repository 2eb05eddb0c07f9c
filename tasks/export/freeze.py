"""Export a trained Keras 3 classifier as a serving SavedModel and a frozen GraphDef, and verify both.

The exported graph takes ENCODED images (a 1-D ``tf.string`` tensor named ``image_bytes``), so a client
needs nothing but the file bytes: decoding, resizing and scaling to float32 in [0, 1] happen inside
the graph with the same TF ops the pipeline uses, and `verify_exported` checks that both artifacts
reproduce the Keras model's outputs on real encoded images.

Layout written under ``out_dir``::

    saved_model/          tf.saved_model, signature "serving_default"(image_bytes) ->
                          {probabilities, top_k_indices, top_k_probabilities}
    frozen_graph.pb       GraphDef with the variables folded into constants
    frozen_graph.json     input/output tensor names of the frozen graph, image_shape, top_k, num_heads
    labels.txt            ``index:name`` per class
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from tasks.export.files import FROZEN_GRAPH_FILE, FROZEN_GRAPH_INFO_FILE, LABELS_FILE, SAVED_MODEL_DIR

if TYPE_CHECKING:
    import keras

SERVING_SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"
FROZEN_OUTPUT_SCOPE = "output"
OUTPUT_KEYS = ("probabilities", "top_k_indices", "top_k_probabilities")
DEFAULT_TOLERANCE = 1e-5


class FreezeVerificationError(ValueError):
    """An exported artifact that cannot be loaded or does not reproduce the Keras model's outputs."""


@dataclass
class FreezeInfo:
    """What `export_serving_model` wrote: the frozen graph's tensor names and the model's geometry.

    ``input_tensor`` and ``output_tensors`` are tensor names in ``frozen_graph.pb`` (e.g.
    ``"image_bytes:0"``); ``output_tensors`` maps each of `OUTPUT_KEYS` to its tensor name
    (``"output/probabilities:0"``, ``"output/top_k_indices:0"``, ``"output/top_k_probabilities:0"``).
    ``num_heads`` is 0 for a single-label model. ``max_abs_diff`` is filled in by `verify_exported`.
    """

    input_tensor: str
    output_tensors: dict[str, str]
    image_shape: tuple[int, int, int]
    num_heads: int
    top_k: int
    num_classes: int
    max_abs_diff: float | None = None
    signature: str = field(default=SERVING_SIGNATURE)

    def to_json_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_shape"] = list(self.image_shape)
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> FreezeInfo:
        values = dict(data)
        values["image_shape"] = tuple(int(v) for v in values["image_shape"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------
# Graph pieces shared by export and verification, so both decode images with exactly the same ops.


def decode_pixels(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    """One encoded image (scalar string) -> uint8 (h, w, channels); GIF animations give the first frame.

    ``tf.io.decode_image`` refuses ``channels=1`` for GIF and BMP, so for grey models those two are
    decoded as RGB and converted with ``tf.image.rgb_to_grayscale`` (rounded; grey stays exact).
    """
    if channels != 1:
        pixels = tf.io.decode_image(encoded, channels=channels, expand_animations=False, dtype=tf.uint8)
        return tf.ensure_shape(pixels, [None, None, channels])
    is_gif = tf.equal(tf.strings.substr(encoded, 0, 3), b"GIF")
    is_bmp = tf.equal(tf.strings.substr(encoded, 0, 2), b"BM")
    pixels = tf.cond(
        tf.logical_or(is_gif, is_bmp),
        lambda: _decode_rgb_as_grey(encoded),
        lambda: tf.io.decode_image(encoded, channels=1, expand_animations=False, dtype=tf.uint8),
    )
    return tf.ensure_shape(pixels, [None, None, 1])


def _decode_rgb_as_grey(encoded: tf.Tensor) -> tf.Tensor:
    rgb = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    grey = tf.image.rgb_to_grayscale(tf.cast(rgb, tf.float32))
    return tf.cast(tf.clip_by_value(tf.round(grey), 0.0, 255.0), tf.uint8)


def decode_to_float(encoded: tf.Tensor, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """One encoded PNG/JPEG/BMP/GIF image (scalar string) -> float32 (H, W, C) in [0, 1].

    Images already at (H, W) are only scaled (uint8 / 255); others are resized bilinearly first.
    """
    height, width, channels = image_shape
    pixels = decode_pixels(encoded, channels)
    as_float = tf.cast(pixels, tf.float32)
    same_size = tf.logical_and(tf.equal(tf.shape(pixels)[0], height), tf.equal(tf.shape(pixels)[1], width))
    sized = tf.cond(
        same_size,
        lambda: as_float,
        lambda: tf.image.resize(as_float, (height, width), method="bilinear"),
    )
    scaled = sized / 255.0
    return tf.ensure_shape(scaled, [height, width, channels])


def decode_batch(image_bytes: tf.Tensor, image_shape: tuple[int, int, int]) -> tf.Tensor:
    """1-D string tensor of encoded images -> float32 batch (B, H, W, C) in [0, 1]."""
    return tf.map_fn(
        lambda encoded: decode_to_float(encoded, image_shape),
        image_bytes,
        fn_output_signature=tf.TensorSpec(list(image_shape), tf.float32),
    )


def outputs_from_probabilities(probabilities: tf.Tensor, top_k: int) -> dict[str, tf.Tensor]:
    top = tf.math.top_k(probabilities, k=top_k, sorted=True)
    return {
        "probabilities": tf.identity(probabilities, name="probabilities"),
        "top_k_indices": tf.cast(top.indices, tf.int32, name="top_k_indices"),
        "top_k_probabilities": tf.identity(top.values, name="top_k_probabilities"),
    }


class _ServingModule(tf.Module):
    """A tf.Module holding the Keras model's variables and the bytes-in serving function."""

    def __init__(self, model: keras.Model, image_shape: tuple[int, int, int], top_k: int) -> None:
        super().__init__(name="tfpipe_serving")
        self._model = model
        self._image_shape = image_shape
        self._top_k = top_k
        # Keras 3 variables are TF trackables on the TensorFlow backend; listing them here is what
        # makes tf.saved_model.save write them (the same approach as keras.export.ExportArchive).
        self.model_variables = list(model.variables)
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)],
            autograph=False,
        )

    def _serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = decode_batch(image_bytes, self._image_shape)
        probabilities = tf.convert_to_tensor(self._model(images, training=False))
        return outputs_from_probabilities(tf.cast(probabilities, tf.float32), self._top_k)


# ---------------------------------------------------------------------------------------------------
# Export


def export_serving_model(
    model: keras.Model,
    out_dir: Path,
    *,
    image_shape: tuple[int, int, int],
    class_names: list[str],
    top_k: int = 3,
) -> FreezeInfo:
    """Write ``saved_model/``, ``frozen_graph.pb``, ``frozen_graph.json`` and ``labels.txt`` into out_dir.

    ``top_k`` is clipped to the number of classes. Raises ValueError when the model's input or output
    shape disagrees with ``image_shape`` / ``class_names``.
    """
    image_shape = _checked_image_shape(image_shape)
    num_heads, num_classes = _output_geometry(model, image_shape)
    if num_classes != len(class_names):
        raise ValueError(f"model outputs {num_classes} classes but {len(class_names)} class names were given")
    top_k = max(1, min(int(top_k), num_classes))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = _ServingModule(model, image_shape, top_k)
    concrete = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(out_dir / SAVED_MODEL_DIR), signatures={SERVING_SIGNATURE: concrete})

    input_name, output_names = _write_frozen_graph(concrete, out_dir / FROZEN_GRAPH_FILE)
    info = FreezeInfo(
        input_tensor=input_name,
        output_tensors=output_names,
        image_shape=image_shape,
        num_heads=num_heads,
        top_k=top_k,
        num_classes=num_classes,
    )
    write_freeze_info(out_dir, info)
    write_labels(out_dir / LABELS_FILE, class_names)
    return info


@dataclass(frozen=True)
class ExportJob:
    """`export_model_file`'s argument: what `export_serving_model` needs, with the model as a file."""

    model_file: Path
    out_dir: Path
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    top_k: int


def export_model_file(job: ExportJob, report: Any = None) -> FreezeInfo:
    """`export_serving_model` of the Keras model saved in ``job.model_file``.

    Meant for a process of its own (`tasks.runtime.fresh_process.run_in_fresh_process`, which passes ``report``):
    the SavedModel records names TensorFlow and Keras number per process (traced functions, seed generators),
    so only an export in a fresh process writes the same bytes whatever ran before it. Keras is seeded before
    loading because Dropout's seed-generator states are saved as variables.
    """
    import keras

    from models.builders import load_trained_model

    keras.utils.set_random_seed(0)
    model = load_trained_model(job.model_file)
    return export_serving_model(model, job.out_dir, image_shape=job.image_shape,
                                class_names=list(job.class_names), top_k=job.top_k)


def _checked_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(image_shape) != 3 or image_shape[2] not in (1, 3) or min(image_shape[:2]) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape!r}")
    return (int(image_shape[0]), int(image_shape[1]), int(image_shape[2]))


def _output_geometry(model: keras.Model, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(num_heads, num_classes) from the model's output shape; num_heads is 0 for single-label."""
    input_shape = tuple(model.inputs[0].shape[1:])
    if any(dim is not None and dim != want for dim, want in zip(input_shape, image_shape, strict=False)):
        raise ValueError(f"model input shape {input_shape} does not match image_shape {image_shape}")
    output_shape = tuple(model.outputs[0].shape[1:])
    if len(output_shape) == 1:
        return 0, int(output_shape[0])
    if len(output_shape) == 2:
        return int(output_shape[0]), int(output_shape[1])
    raise ValueError(f"model output shape {output_shape} is neither (classes,) nor (heads, classes)")


def _write_frozen_graph(concrete: Any, path: Path) -> tuple[str, dict[str, str]]:
    """Fold the variables into constants and write the GraphDef; returns (input name, output names)."""
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    # The frozen function's outputs keep the flattened order of the original dict (sorted keys).
    structured = tf.nest.pack_sequence_as(concrete.structured_outputs, frozen.outputs)
    output_names = {key: _add_named_output(graph_def, key, structured[key]) for key in OUTPUT_KEYS}
    path.write_bytes(graph_def.SerializeToString())
    inputs = [t for t in frozen.inputs if t.dtype == tf.string]
    if len(inputs) != 1:
        raise RuntimeError(f"expected one string input in the frozen graph, got {frozen.inputs}")
    return inputs[0].name, output_names


def _add_named_output(graph_def: Any, key: str, tensor: tf.Tensor) -> str:
    """Append an Identity node ``output/<key>`` reading ``tensor``, so outputs have stable names."""
    name = f"{FROZEN_OUTPUT_SCOPE}/{key}"
    if any(node.name == name for node in graph_def.node):
        raise RuntimeError(f"frozen graph already has a node named {name!r}")
    node = graph_def.node.add()
    node.name = name
    node.op = "Identity"
    producer, index = tensor.name.rsplit(":", 1)
    node.input.append(producer if index == "0" else f"{producer}:{index}")
    node.attr["T"].type = tensor.dtype.as_datatype_enum
    return f"{name}:0"


def write_freeze_info(out_dir: Path, info: FreezeInfo) -> None:
    text = json.dumps(info.to_json_dict(), indent=2, sort_keys=True) + "\n"
    (Path(out_dir) / FROZEN_GRAPH_INFO_FILE).write_text(text, encoding="utf-8")


def read_freeze_info(out_dir: Path) -> FreezeInfo:
    data = json.loads((Path(out_dir) / FROZEN_GRAPH_INFO_FILE).read_text(encoding="utf-8"))
    return FreezeInfo.from_json_dict(data)


def write_labels(path: Path, class_names: list[str]) -> None:
    for name in class_names:
        if "\n" in name or "\r" in name:
            raise ValueError(f"class name {name!r} contains a line break")
    path.write_text("".join(f"{i}:{name}\n" for i, name in enumerate(class_names)), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# Verification


def verify_exported(
    out_dir: Path,
    model: keras.Model,
    encoded_images: list[bytes],
    *,
    image_shape: tuple[int, int, int],
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """Reload the SavedModel and the frozen graph, run both on ``encoded_images`` and compare to Keras.

    The reference is ``model`` applied to the same images decoded with the same TF ops (`decode_batch`).
    Compares probabilities and top-k probabilities, and requires identical top-k indices where the
    probabilities are not tied. Returns the max abs difference over both artifacts and updates
    ``max_abs_diff`` in ``frozen_graph.json``. Raises FreezeVerificationError when an artifact fails to
    load or run, or when the difference exceeds ``tolerance``.
    """
    if not encoded_images:
        raise ValueError("verify_exported needs at least one encoded image")
    out_dir = Path(out_dir)
    image_shape = _checked_image_shape(image_shape)
    info = _read_info_or_fail(out_dir)
    if info.image_shape != image_shape:
        raise FreezeVerificationError(
            f"{out_dir}: exported for image_shape {info.image_shape}, verified with {image_shape}"
        )
    batch = tf.constant(list(encoded_images), dtype=tf.string)
    expected = _keras_reference_outputs(model, batch, image_shape, info.top_k)

    saved = _run_saved_model(out_dir / SAVED_MODEL_DIR, batch)
    frozen = _run_frozen_graph(out_dir / FROZEN_GRAPH_FILE, info, list(encoded_images))
    diffs = {"SavedModel": _max_abs_diff(expected, saved, "SavedModel")}
    diffs["frozen graph"] = _max_abs_diff(expected, frozen, "frozen graph")
    for what, diff in diffs.items():
        if not diff <= tolerance:  # also catches NaN
            raise FreezeVerificationError(
                f"{out_dir}: the {what} differs from the Keras model by {diff:.3g} (tolerance {tolerance:g})"
            )
    for what, actual in (("SavedModel", saved), ("frozen graph", frozen)):
        if not _top_k_indices_agree(expected, actual, tolerance):
            raise FreezeVerificationError(f"{out_dir}: the {what}'s top-k indices differ from the Keras model's")
    diff = max(diffs.values())
    info.max_abs_diff = float(diff)
    write_freeze_info(out_dir, info)
    return float(diff)


def _read_info_or_fail(out_dir: Path) -> FreezeInfo:
    try:
        return read_freeze_info(out_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FreezeVerificationError(f"{out_dir / FROZEN_GRAPH_INFO_FILE}: unreadable: {err}") from err


def _keras_reference_outputs(
    model: keras.Model, batch: tf.Tensor, image_shape: tuple[int, int, int], top_k: int
) -> dict[str, np.ndarray]:
    images = decode_batch(batch, image_shape)
    probabilities = tf.cast(tf.convert_to_tensor(model(images, training=False)), tf.float32)
    return {key: value.numpy() for key, value in outputs_from_probabilities(probabilities, top_k).items()}


def _run_saved_model(saved_model_dir: Path, batch: tf.Tensor) -> dict[str, np.ndarray]:
    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
        serve = loaded.signatures[SERVING_SIGNATURE]
        outputs = serve(**{INPUT_NAME: batch})
    except (tf.errors.OpError, OSError, KeyError, ValueError) as err:
        raise FreezeVerificationError(f"{saved_model_dir}: cannot load or run the SavedModel: {err}") from err
    return {key: outputs[key].numpy() for key in OUTPUT_KEYS}


def load_frozen_graph(pb_path: Path) -> tf.Graph:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(Path(pb_path).read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def run_frozen_graph(pb_path: Path, info: FreezeInfo, encoded_images: list[bytes]) -> dict[str, np.ndarray]:
    """Run ``frozen_graph.pb`` through a v1 Session with the tensor names recorded in ``info``."""
    graph = load_frozen_graph(pb_path)
    fetches = {key: graph.get_tensor_by_name(name) for key, name in info.output_tensors.items()}
    feed = {graph.get_tensor_by_name(info.input_tensor): np.array(encoded_images, dtype=object)}
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(fetches, feed_dict=feed)


def _run_frozen_graph(pb_path: Path, info: FreezeInfo, encoded_images: list[bytes]) -> dict[str, np.ndarray]:
    try:
        return run_frozen_graph(pb_path, info, encoded_images)
    except (tf.errors.OpError, OSError, KeyError, ValueError) as err:
        raise FreezeVerificationError(f"{pb_path}: cannot load or run the frozen graph: {err}") from err


def _max_abs_diff(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], what: str) -> float:
    """Max abs difference of the probability outputs; raises when their shapes differ."""
    worst = 0.0
    for key in ("probabilities", "top_k_probabilities"):
        want, got = np.asarray(expected[key]), np.asarray(actual[key])
        if want.shape != got.shape:
            raise FreezeVerificationError(f"{what}: {key} has shape {got.shape}, expected {want.shape}")
        worst = max(worst, float(np.max(np.abs(want.astype(np.float64) - got.astype(np.float64)))))
    return worst


def _top_k_indices_agree(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], tolerance: float
) -> bool:
    """Top-k indices must match, except where the reference probabilities are (near) tied."""
    want_idx, got_idx = np.asarray(expected["top_k_indices"]), np.asarray(actual["top_k_indices"])
    if want_idx.shape != got_idx.shape:
        return False
    probs = np.asarray(expected["probabilities"])
    want_p = np.take_along_axis(probs, want_idx.astype(np.int64), axis=-1)
    got_p = np.take_along_axis(probs, got_idx.astype(np.int64), axis=-1)
    return bool(np.all((want_idx == got_idx) | (np.abs(want_p - got_p) <= tolerance)))
