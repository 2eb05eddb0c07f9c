"""Predict on PNG files with an exported tiny model and compare with the Keras model itself."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from PIL import Image

from tasks.export.freeze import export_serving_model
from tasks.export.predict import (
    INPUT_NAME,
    BadImage,
    BadImagesError,
    Prediction,
    Predictor,
    format_bad_images,
    format_predictions,
    load_predictor,
    read_labels,
    tf_error_line,
)

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


def assert_same_predictions(actual: list[Prediction], expected: list[Prediction], atol: float = 1e-6) -> None:
    """Same paths and top-k labels; probabilities equal up to the rounding a different batch can give."""
    assert [p.path for p in actual] == [p.path for p in expected]
    for a, b in zip(actual, expected, strict=True):
        assert [label for label, _ in a.top] == [label for label, _ in b.top]
        np.testing.assert_allclose([p for _, p in a.top], [p for _, p in b.top], atol=atol)


def write_jpeg(path: Path, seed: int = 0, side: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def bad_files(directory: Path, good_png: Path) -> dict[str, Path]:
    """One file per way an image can be bad, by name."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "truncated_png": directory / "truncated.png",
        "garbage": directory / "garbage.jpg",
        "empty": directory / "empty.png",
        "missing": directory / "missing.png",
        "directory": directory / "folder.png",
        "truncated_jpeg": directory / "truncated.jpg",
    }
    files["truncated_png"].write_bytes(good_png.read_bytes()[:40])
    files["garbage"].write_bytes(b"this is not an image at all")
    files["empty"].write_bytes(b"")
    files["directory"].mkdir()
    whole = write_jpeg(directory / "whole.jpg")
    files["truncated_jpeg"].write_bytes(whole[: len(whole) // 2])
    return files


def test_predict_reports_every_bad_file_not_just_the_first(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 2)
    bad = bad_files(tmp_path / "bad", paths[0])
    order = [paths[0], *bad.values(), paths[1]]
    with pytest.raises(BadImagesError) as caught:
        load_predictor(out_dir).predict(order, batch_size=2)
    error = caught.value
    assert isinstance(error, ValueError)  # the CLI's error path catches ValueError
    assert [item.path for item in error.bad] == list(bad.values())
    lines = str(error).splitlines()
    assert lines[0] == f"{len(bad)} bad image files:"
    assert lines[1:] == [f"{item.path}: {item.reason}" for item in error.bad]
    reasons = {name: item.reason for name, item in zip(bad, error.bad, strict=True)}
    assert reasons["empty"] == "empty file (0 bytes)"
    assert reasons["missing"] == "cannot read: No such file or directory"
    assert reasons["directory"] == "is a directory, not an image file"
    assert reasons["garbage"].startswith("not a decodable image: Unknown image file format")
    assert reasons["truncated_png"].startswith("not a decodable image: ")
    assert reasons["truncated_jpeg"].startswith("truncated JPEG (no end-of-image marker): ")


def test_bad_image_reason_is_one_short_line(classifier_dir: tuple[Path, keras.Model], tmp_path: Path) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 1)
    bad = bad_files(tmp_path / "bad", paths[0])
    _, reported = load_predictor(out_dir).check_images(list(bad.values()))
    assert len(reported) == len(bad)
    for item in reported:
        assert item.reason and "\n" not in item.reason and len(item.reason) <= 200, item
        for noise in ("node", "Traceback", "Graph execution", "[Op:", "File \"", "{{", "[["):
            assert noise.lower() not in item.reason.lower(), item


def test_check_images_separates_good_and_bad_in_order(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 4)
    bad = bad_files(tmp_path / "bad", paths[0])
    jpeg = tmp_path / "images" / "photo.jpg"
    write_jpeg(jpeg, seed=3)
    good_paths = [paths[0], paths[1], jpeg, paths[2], paths[3]]
    mixed = [paths[0], bad["garbage"], paths[1], bad["empty"], jpeg, bad["missing"], paths[2], paths[3]]
    predictor = load_predictor(out_dir)
    good, reported = predictor.check_images(mixed)
    assert [path for path, _ in good] == good_paths
    assert all(data == path.read_bytes() for path, data in good)
    assert [item.path for item in reported] == [bad["garbage"], bad["empty"], bad["missing"]]
    assert all(isinstance(item, BadImage) for item in reported)
    skipped_bad = predictor.predict_encoded(good, 3)
    assert [p.path for p in skipped_bad] == good_paths
    # check_images ran the model on its batches (default 64): the same as predicting the good files alone
    assert [p.top for p in skipped_bad] == [p.top for p in predictor.predict(good_paths)]
    # and, up to float rounding that depends on the batch's composition, as predicting them 3 at a time
    assert_same_predictions(skipped_bad, predictor.predict(good_paths, batch_size=3))


def test_truncated_jpegs_are_reported_or_predicted_never_a_failed_batch(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    """Whatever the check accepts the serving graph decodes too (they share one decode function)."""
    out_dir, _ = classifier_dir
    whole = write_jpeg(tmp_path / "whole.jpg", seed=5)
    cut_paths = []
    for keep in (2, 3, 20, len(whole) // 4, len(whole) // 2, len(whole) - 2, len(whole) - 1):
        path = tmp_path / f"cut_{keep}.jpg"
        path.write_bytes(whole[:keep])
        cut_paths.append(path)
    padded = tmp_path / "zero_padded.jpg"  # a preallocated download that stopped half way
    padded.write_bytes(whole[: len(whole) // 2] + bytes(len(whole) - len(whole) // 2))
    predictor = load_predictor(out_dir)
    good, reported = predictor.check_images([tmp_path / "whole.jpg", *cut_paths, padded])
    assert [path for path, _ in good][:1] == [tmp_path / "whole.jpg"]
    assert len(predictor.predict_encoded(good, batch_size=len(good))) == len(good)
    # TensorFlow 2.21 rejects a JPEG cut anywhere before its end-of-image marker
    assert [item.path for item in reported] == [*cut_paths, padded]
    assert all(item.reason.startswith("truncated JPEG") for item in reported[2:])


def test_predict_encoded_names_unchecked_bad_bytes(classifier_dir: tuple[Path, keras.Model], tmp_path: Path) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 3)
    items = [(path, path.read_bytes()) for path in paths]
    items.insert(1, (tmp_path / "never_checked.png", b"\x89PNG not really"))
    with pytest.raises(BadImagesError) as caught:
        load_predictor(out_dir).predict_encoded(items, batch_size=2)
    assert [item.path for item in caught.value.bad] == [tmp_path / "never_checked.png"]


class DecodeCounter:
    """Counts what a Predictor decodes: the images its serving signature receives (the signature's graph
    decodes each one) and the calls of its one-image test-decode function."""

    def __init__(self, predictor: Predictor) -> None:
        self.served: Counter[bytes] = Counter()
        self.serve_calls = 0
        self.test_decodes = 0
        serve, check = predictor._serve, predictor._check_decodes

        def counting_serve(**inputs: Any) -> Any:
            self.serve_calls += 1
            self.served.update(inputs[INPUT_NAME].numpy().tolist())
            return serve(**inputs)

        def counting_check(encoded: Any) -> Any:
            self.test_decodes += 1
            return check(encoded)

        predictor._serve, predictor._check_decodes = counting_serve, counting_check


def test_each_image_is_decoded_once(classifier_dir: tuple[Path, keras.Model], tmp_path: Path) -> None:
    out_dir, model = classifier_dir
    paths, pixels = write_pngs(tmp_path / "images", 10, seed=4)
    empty, missing = tmp_path / "empty.png", tmp_path / "missing.png"
    empty.write_bytes(b"")  # bad files the cheap checks catch cost no decode
    predictor = load_predictor(out_dir)
    counter = DecodeCounter(predictor)
    # the CLI's path: check, then predict what passed
    good, bad = predictor.check_images([paths[0], empty, *paths[1:], missing], batch_size=4)
    assert [item.path for item in bad] == [empty, missing]
    predictions = predictor.predict_encoded(good, batch_size=4)
    assert [p.path for p in predictions] == paths
    assert [p.label for p in predictions] == [CLASSES[i] for i in keras_probabilities(model, pixels).argmax(1)]
    assert counter.served == Counter(path.read_bytes() for path in paths)  # each image once, none twice
    assert (counter.serve_calls, counter.test_decodes) == (3, 0)
    # predict() does the same
    counter.served.clear()
    assert [p.top for p in predictor.predict(paths, batch_size=4)] == [p.top for p in predictions]
    assert counter.served == Counter(path.read_bytes() for path in paths)
    assert (counter.serve_calls, counter.test_decodes) == (6, 0)
    # results are handed back once; bytes that check_images did not return are run by the model
    again = predictor.predict_encoded(good, batch_size=4)
    copies = predictor.predict_encoded([(path, path.read_bytes()) for path in paths], batch_size=4)
    assert [p.top for p in again] == [p.top for p in copies] == [p.top for p in predictions]
    assert counter.serve_calls == 12 and counter.test_decodes == 0


def test_bad_image_inside_a_batch_spares_the_others(
    classifier_dir: tuple[Path, keras.Model], tmp_path: Path
) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 6, seed=6)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    predictor = load_predictor(out_dir)
    counter = DecodeCounter(predictor)
    good, bad = predictor.check_images([*paths[:3], garbage, *paths[3:]], batch_size=8)  # one batch of 7
    assert [path for path, _ in good] == paths
    assert len(bad) == 1 and bad[0].path == garbage
    assert bad[0].reason.startswith("not a decodable image: ") and "\n" not in bad[0].reason
    assert counter.test_decodes == 7  # the failed batch's images, each test-decoded alone
    predictions = predictor.predict_encoded(good, batch_size=8)
    # the same as predicting the good six without the bad file: exactly when batched the same way,
    # and up to batch-dependent float rounding when each is predicted on its own
    assert [p.top for p in predictions] == [p.top for p in predictor.predict(paths, batch_size=8)]
    alone = [predictor.predict([path], batch_size=1)[0] for path in paths]
    assert_same_predictions(predictions, alone)
    with pytest.raises(BadImagesError) as caught:
        predictor.predict([*paths[:3], garbage, *paths[3:]], batch_size=8)
    assert caught.value.bad == tuple(bad)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_reported(classifier_dir: tuple[Path, keras.Model], tmp_path: Path) -> None:
    out_dir, _ = classifier_dir
    paths, _ = write_pngs(tmp_path / "images", 1)
    paths[0].chmod(0)
    _, reported = load_predictor(out_dir).check_images(paths)
    assert reported == [BadImage(paths[0], "cannot read: Permission denied")]


def test_tf_error_line_keeps_only_what_went_wrong() -> None:
    graph = (
        "Graph execution error:\n\nDetected at node decode_image/DecodeImage defined at (most recent call last):\n"
        '  File "/x/predict.py", line 131, in check\n\n  File "/x/freeze.py", line 88, in decode_pixels\n\n'
        "jpeg::Uncompress failed. Invalid JPEG data or crop window.\n"
        "\t [[{{node decode_image/DecodeImage}}]] [Op:__inference_check_410]"
    )
    eager = (
        "{{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
        "Input is empty. [Op:DecodeImage] name: "
    )
    plain = "Invalid PNG. Failed to initialize decoder.\n\t [[{{node cond/decode_image/DecodeImage}}]] [Op:f]"
    assert tf_error_line(graph) == "jpeg::Uncompress failed. Invalid JPEG data or crop window."
    assert tf_error_line(eager) == "Input is empty."
    assert tf_error_line(plain) == "Invalid PNG. Failed to initialize decoder."
    assert tf_error_line("Graph execution error:\n\n") == "decode failed"


def test_format_bad_images() -> None:
    bad = [BadImage(Path("a.png"), "empty file (0 bytes)"), BadImage(Path("b/c.jpg"), "cannot read: Is a directory")]
    lines = ["a.png: empty file (0 bytes)", "b/c.jpg: cannot read: Is a directory"]
    assert format_bad_images(bad).splitlines() == lines
    assert str(BadImagesError(bad[:1])) == "1 bad image file:\na.png: empty file (0 bytes)"


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
    code = "import sys, tasks.export.predict; print('tensorflow' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
