"""Export tiny Keras models as SavedModel + frozen graph and check both reproduce the Keras outputs."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tasks.export.freeze import (
    FreezeInfo,
    FreezeVerificationError,
    decode_batch,
    export_serving_model,
    verify_exported,
)

SHAPE = (8, 8, 3)
CLASSES = ["cat", "dog", "emu", "fox", "gnu"]
LETTERS = list("ABCDEF")


def single_label_model(seed: int, image_shape: tuple[int, int, int] = SHAPE, classes: int = 5) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(image_shape, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def multi_head_model(seed: int, heads: int = 4, classes: int = 6) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(heads * classes)(x)
    x = keras.layers.Reshape((heads, classes))(x)
    outputs = keras.layers.Softmax(axis=-1)(x)
    return keras.Model(inputs, outputs)


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze()).save(buffer, format=fmt)
    return buffer.getvalue()


def random_images(count: int, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model, FreezeInfo]:
    model = single_label_model(seed=1)
    out_dir = tmp_path_factory.mktemp("single") / "export"
    info = export_serving_model(model, out_dir, image_shape=SHAPE, class_names=CLASSES, top_k=3)
    return out_dir, model, info


@pytest.fixture(scope="module")
def encoded_images() -> list[bytes]:
    return [encode(img) for img in random_images(5)]


def run_frozen_with_documented_names(out_dir: Path, images: list[bytes]) -> dict[str, np.ndarray]:
    """Run frozen_graph.pb the way an outside client would: names from frozen_graph.json only."""
    names = json.loads((out_dir / "frozen_graph.json").read_text())
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((out_dir / "frozen_graph.pb").read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(names["output_tensors"], feed_dict={names["input_tensor"]: images})


def test_export_writes_every_artifact(exported: tuple[Path, keras.Model, FreezeInfo]) -> None:
    out_dir, _, info = exported
    assert (out_dir / "saved_model" / "saved_model.pb").is_file()
    assert (out_dir / "frozen_graph.pb").stat().st_size > 0
    assert (out_dir / "labels.txt").read_text() == "0:cat\n1:dog\n2:emu\n3:fox\n4:gnu\n"
    written = json.loads((out_dir / "frozen_graph.json").read_text())
    assert written["input_tensor"] == info.input_tensor == "image_bytes:0"
    assert written["output_tensors"] == info.output_tensors
    assert info.output_tensors["probabilities"] == "output/probabilities:0"
    assert written["image_shape"] == [8, 8, 3]
    assert (written["num_heads"], written["top_k"], written["num_classes"]) == (0, 3, 5)


def test_verify_matches_keras_and_records_diff(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes]
) -> None:
    out_dir, model, _ = exported
    diff = verify_exported(out_dir, model, encoded_images, image_shape=SHAPE)
    assert 0.0 <= diff <= 1e-5
    assert json.loads((out_dir / "frozen_graph.json").read_text())["max_abs_diff"] == pytest.approx(diff)


def test_saved_model_signature_outputs(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes]
) -> None:
    out_dir, model, _ = exported
    serve = tf.saved_model.load(str(out_dir / "saved_model")).signatures["serving_default"]
    outputs = serve(image_bytes=tf.constant(encoded_images))
    pixels = np.stack(random_images(5)).astype(np.float32) / 255.0
    expected = keras.ops.convert_to_numpy(model(pixels, training=False))
    np.testing.assert_allclose(outputs["probabilities"].numpy(), expected, atol=1e-5)
    assert outputs["top_k_indices"].dtype == tf.int32
    np.testing.assert_array_equal(outputs["top_k_indices"].numpy()[:, 0], expected.argmax(axis=1))
    assert outputs["top_k_probabilities"].shape == (5, 3)


def test_frozen_graph_runs_with_documented_names(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes]
) -> None:
    out_dir, model, _ = exported
    frozen = run_frozen_with_documented_names(out_dir, encoded_images)
    pixels = np.stack(random_images(5)).astype(np.float32) / 255.0
    expected = keras.ops.convert_to_numpy(model(pixels, training=False))
    np.testing.assert_allclose(frozen["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(frozen["top_k_indices"][:, 0], expected.argmax(axis=1))
    # No variables left: the frozen graph is self-contained.
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((out_dir / "frozen_graph.pb").read_bytes())
    assert not [n.op for n in graph_def.node if "Variable" in n.op]


def test_other_sizes_and_formats_are_resized_like_keras_input(exported: tuple[Path, keras.Model, FreezeInfo]) -> None:
    out_dir, model, _ = exported
    images = [encode(random_images(1, (12, 10, 3))[0], "JPEG"), encode(random_images(1, (8, 8, 3))[0], "BMP")]
    images.append(encode(random_images(1, (5, 9, 3))[0], "GIF"))
    assert verify_exported(out_dir, model, images, image_shape=SHAPE) <= 1e-5
    decoded = decode_batch(tf.constant(images), SHAPE).numpy()
    assert decoded.shape == (3, 8, 8, 3) and 0.0 <= decoded.min() and decoded.max() <= 1.0


def test_verify_raises_for_a_different_model(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes]
) -> None:
    out_dir, _, _ = exported
    with pytest.raises(FreezeVerificationError, match="SavedModel differs from the Keras model by"):
        verify_exported(out_dir, single_label_model(seed=99), encoded_images, image_shape=SHAPE)


def test_verify_raises_when_saved_model_variables_are_swapped(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes], tmp_path: Path
) -> None:
    out_dir, model, _ = exported
    tampered = tmp_path / "tampered"
    shutil.copytree(out_dir, tampered)
    other_dir = tmp_path / "other"
    export_serving_model(single_label_model(seed=7), other_dir, image_shape=SHAPE, class_names=CLASSES)
    shutil.rmtree(tampered / "saved_model" / "variables")
    shutil.copytree(other_dir / "saved_model" / "variables", tampered / "saved_model" / "variables")
    with pytest.raises(FreezeVerificationError, match="SavedModel"):
        verify_exported(tampered, model, encoded_images, image_shape=SHAPE)


def test_verify_raises_when_variable_bytes_are_corrupted(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes], tmp_path: Path
) -> None:
    out_dir, model, _ = exported
    tampered = tmp_path / "tampered"
    shutil.copytree(out_dir, tampered)
    data_file = next((tampered / "saved_model" / "variables").glob("variables.data-*"))
    raw = bytearray(data_file.read_bytes())
    raw[: len(raw) // 2] = bytes(255 - b for b in raw[: len(raw) // 2])
    data_file.write_bytes(bytes(raw))
    with pytest.raises(FreezeVerificationError):
        verify_exported(tampered, model, encoded_images, image_shape=SHAPE)


def test_verify_raises_when_frozen_graph_is_from_another_model(
    exported: tuple[Path, keras.Model, FreezeInfo], encoded_images: list[bytes], tmp_path: Path
) -> None:
    out_dir, model, _ = exported
    tampered = tmp_path / "tampered"
    shutil.copytree(out_dir, tampered)
    other_dir = tmp_path / "other"
    export_serving_model(single_label_model(seed=8), other_dir, image_shape=SHAPE, class_names=CLASSES)
    shutil.copy(other_dir / "frozen_graph.pb", tampered / "frozen_graph.pb")
    with pytest.raises(FreezeVerificationError, match="frozen graph"):
        verify_exported(tampered, model, encoded_images, image_shape=SHAPE)


def test_multi_head_export_and_verify(tmp_path: Path, encoded_images: list[bytes]) -> None:
    model = multi_head_model(seed=3)
    info = export_serving_model(model, tmp_path, image_shape=SHAPE, class_names=LETTERS, top_k=2)
    assert (info.num_heads, info.num_classes, info.top_k) == (4, 6, 2)
    assert verify_exported(tmp_path, model, encoded_images, image_shape=SHAPE) <= 1e-5
    frozen = run_frozen_with_documented_names(tmp_path, encoded_images)
    assert frozen["probabilities"].shape == (5, 4, 6)
    assert frozen["top_k_indices"].shape == (5, 4, 2)
    np.testing.assert_allclose(frozen["probabilities"].sum(axis=-1), 1.0, atol=1e-5)


def test_grey_model_accepts_png_gif_and_bmp(tmp_path: Path) -> None:
    shape = (8, 8, 1)
    model = single_label_model(seed=4, image_shape=shape, classes=3)
    export_serving_model(model, tmp_path, image_shape=shape, class_names=["a", "b", "c"])
    grey = random_images(3, (8, 8), seed=5)
    images = [encode(grey[0], "PNG"), encode(grey[1], "GIF"), encode(grey[2], "BMP")]
    assert verify_exported(tmp_path, model, images, image_shape=shape) <= 1e-5
    decoded = decode_batch(tf.constant(images), shape).numpy()
    np.testing.assert_allclose(decoded[..., 0] * 255.0, np.stack(grey).astype(np.float32), atol=1e-3)


def test_export_rejects_mismatched_class_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="5 classes but 2"):
        export_serving_model(single_label_model(seed=1), tmp_path, image_shape=SHAPE, class_names=["a", "b"])
