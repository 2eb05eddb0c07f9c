"""Predict on PNG files with an exported tiny model and compare with the Keras model itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from tasks.ops.freeze import export_serving_model
from tasks.ops.predict import Prediction, format_predictions, load_predictor, read_labels

SHAPE = (8, 8, 3)
CLASSES = ["cat", "dog", "emu", "fox"]
LETTERS = list("ABCDE")


def tiny_classifier(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE, name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tiny_captcha_model(seed: int, heads: int = 4) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE, name="image")
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(heads * len(LETTERS))(x)
    x = keras.layers.Reshape((heads, len(LETTERS)))(x)
    outputs = keras.layers.Softmax(axis=-1)(x)
    return keras.Model(inputs, outputs)


def write_pngs(directory: Path, count: int, seed: int = 0) -> tuple[list[Path], np.ndarray]:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, *SHAPE), dtype=np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(pixels):
        path = directory / f"img_{i:03d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths, pixels


def keras_probabilities(model: keras.Model, pixels: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(pixels.astype(np.float32) / 255.0, training=False))


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    model = tiny_classifier(seed=11)
    out_dir = tmp_path_factory.mktemp("classifier")
    export_serving_model(model, out_dir, image_shape=SHAPE, class_names=CLASSES, top_k=3)
    return out_dir, model


def test_predict_matches_keras_argmax_across_batches(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out_dir, model = classifier_dir
    paths, pixels = write_pngs(tmp_path / "images", 11)
    predictor = load_predictor(out_dir)
    predictions = predictor.predict(paths, batch_size=4)  # 3 batches, the last one partial
    expected = keras_probabilities(model, pixels)
    assert [p.path for p in predictions] == paths
    assert [p.label for p in predictions] == [CLASSES[i] for i in expected.argmax(axis=1)]
    for prediction, probs in zip(predictions, expected, strict=True):
        assert len(prediction.top) == 3 and prediction.text is None
        top_probs = [prob for _, prob in prediction.top]
        assert top_probs == sorted(top_probs, reverse=True)
        np.testing.assert_allclose(top_probs, np.sort(probs)[::-1][:3], atol=1e-5)


def test_batch_size_does_not_change_results(classifier_dir: tuple[Path, keras.Model], tmp_path: Path) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 5, seed=1)
    predictor = load_predictor(out_dir)
    one_by_one = predictor.predict(paths, batch_size=1)
    batched = predictor.predict(paths, batch_size=64)
    for a, b in zip(one_by_one, batched, strict=True):
        assert [label for label, _ in a.top] == [label for label, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-6)


def test_corrupt_file_raises_value_error_naming_it(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 2)
    truncated = tmp_path / "images" / "truncated.png"
    truncated.write_bytes(paths[0].read_bytes()[:40])
    garbage = tmp_path / "images" / "garbage.jpg"
    garbage.write_bytes(b"this is not an image at all")
    predictor = load_predictor(out_dir)
    with pytest.raises(ValueError, match="truncated.png"):
        predictor.predict([paths[0], truncated, paths[1]])
    with pytest.raises(ValueError, match="garbage.jpg"):
        predictor.predict([garbage])
    with pytest.raises(ValueError, match="missing.png"):
        predictor.predict([tmp_path / "missing.png"])


def test_captcha_model_predicts_text_per_head(tmp_path: Path) -> None:
    model = tiny_captcha_model(seed=5)
    export_serving_model(model, tmp_path / "model", image_shape=SHAPE, class_names=LETTERS, top_k=2)
    paths, pixels = write_pngs(tmp_path / "images", 3, seed=2)
    predictions = load_predictor(tmp_path / "model").predict(paths)
    expected = keras_probabilities(model, pixels)
    for prediction, probs in zip(predictions, expected, strict=True):
        assert prediction.text == "".join(LETTERS[i] for i in probs.argmax(axis=-1))
        assert len(prediction.text) == 4 and len(prediction.top) == 4
        assert prediction.head_top is not None and all(len(head) == 2 for head in prediction.head_top)
        np.testing.assert_allclose([p for _, p in prediction.top], probs.max(axis=-1), atol=1e-5)


def test_format_predictions() -> None:
    single = Prediction(path=Path("a.png"), top=[("cat", 0.934), ("dog", 0.041)])
    multi = Prediction(path=Path("c.png"), top=[("A", 0.99), ("B", 0.5), ("C", 0.75), ("D", 1.0)], text="ABCD")
    assert format_predictions([single, multi]).splitlines() == [
        "a.png: cat (0.93), dog (0.04)",
        "c.png: ABCD (A 0.99, B 0.50, C 0.75, D 1.00)",
    ]


def test_read_labels_rejects_gaps(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("1:dog\n0:cat\n2:a:b\n")
    assert read_labels(good) == ["cat", "dog", "a:b"]
    bad = tmp_path / "bad.txt"
    bad.write_text("0:cat\n2:dog\n")
    with pytest.raises(ValueError, match="bad.txt"):
        read_labels(bad)


def test_importing_predict_does_not_import_tensorflow() -> None:
    code = "import sys, tasks.ops.predict; print('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
