"""The pixel range a backbone takes: read from a leading Rescaling or Normalization layer, tfpipe's own [0, 1]
for a freeze directory or a tfpipe model, or given; tfpipe's [0, 1] pixels are scaled to it inside the
backbone, so the composed model (evaluate, freeze, predict) sees what the features saw."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.backbone_spec import parse_backbone, parse_input_range  # noqa: E402
from models.backbones import (  # noqa: E402
    OWN_PREPROCESSING,
    InputRange,
    PixelRange,
    chosen_input_range,
    detect_input_range,
    load_backbone_with_range,
)
from models.heads import build_feature_head, compose  # noqa: E402
from tests.fakes.backbones import preprocessing_classifier, small_classifier, write_freeze_dir  # noqa: E402

SHAPE = (16, 16, 3)


def pixels(count: int = 6, seed: int = 0) -> np.ndarray:
    """Float32 images in [0, 1], as tfpipe feeds every model."""
    return np.random.default_rng(seed).uniform(0, 1, (count, *SHAPE)).astype(np.float32)


def normalization_adapted_on(low: float, high: float) -> keras.layers.Normalization:
    layer = keras.layers.Normalization(axis=-1)
    layer.adapt(np.random.default_rng(1).uniform(low, high, (64, *SHAPE)).astype(np.float32))
    return layer


@pytest.mark.parametrize(("layer", "expected"), [
    (keras.layers.Rescaling(1 / 255), "0-255"),  # keras-io's convention
    (keras.layers.Rescaling(1 / 127.5, offset=-1), "0-255"),  # MobileNetV3's include_preprocessing
    (keras.layers.Rescaling(2.0, offset=-1), "0-1"),
    (keras.layers.Rescaling(0.5, offset=0.5), "-1-1"),
    (keras.layers.Rescaling([1 / 255, 1 / 250, 1 / 245]), "0-255"),  # per channel
    (keras.layers.Rescaling(1.0), "0-1"),
])
def test_a_leading_rescaling_tells_the_range(layer: keras.layers.Layer, expected: str) -> None:
    detected = detect_input_range(preprocessing_classifier(layer, SHAPE))
    assert detected is not None and detected.name == expected
    assert "Rescaling" in detected.reason


@pytest.mark.parametrize(("bounds", "expected"), [((0, 255), "0-255"), ((0, 1), "0-1"), ((-1, 1), "-1-1")])
def test_a_leading_normalization_tells_the_range_it_was_adapted_on(bounds: tuple[float, float], expected: str) -> None:
    detected = detect_input_range(preprocessing_classifier(normalization_adapted_on(*bounds), SHAPE))
    assert detected is not None and detected.name == expected
    assert "Normalization" in detected.reason


def test_a_normalization_given_its_statistics_and_an_inverting_one() -> None:
    given = keras.layers.Normalization(mean=[120.0, 115.0, 100.0], variance=[60.0**2, 58.0**2, 57.0**2])
    assert detect_input_range(preprocessing_classifier(given, SHAPE)).name == "0-255"
    inverting = keras.layers.Normalization(mean=0.5, variance=0.04, invert=True)
    assert detect_input_range(preprocessing_classifier(inverting, SHAPE)) is None


def test_resizing_and_augmentation_in_a_nested_model_are_looked_through() -> None:
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1)],
                                    name="augmentation")
    inputs = keras.Input((20, 20, 3))
    x = keras.layers.Resizing(*SHAPE[:2])(inputs)
    x = augmentation(x)
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(4, 3)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    assert detect_input_range(model).name == "0-255"
    assert detect_input_range(keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(1 / 255),
                                                keras.layers.Flatten(), keras.layers.Dense(2)])).name == "0-255"


def test_a_plain_model_says_nothing_and_gets_tfpipes_zero_to_one() -> None:
    assert detect_input_range(small_classifier(SHAPE)) is None
    fallback = chosen_input_range("auto", None)
    assert fallback.name == "0-1" and "no leading Rescaling or Normalization" in fallback.reason
    assert chosen_input_range("-1-1", InputRange("0-255", "detected")) == InputRange("-1-1", "given (input_range)")


def test_a_freeze_directory_takes_tfpipes_zero_to_one(tmp_path: Path) -> None:
    frozen = write_freeze_dir(tmp_path / "Freeze-0123", small_classifier(SHAPE), SHAPE)
    model, pixel_range = load_backbone_with_range(parse_backbone(str(frozen)), SHAPE)
    assert pixel_range.name == "0-1" and "freeze directory" in pixel_range.reason
    assert not [layer for layer in model.layers if isinstance(layer, PixelRange)]


def test_keras_applications_keep_their_own_preprocessing() -> None:
    spec = parse_backbone("keras:MobileNetV3Small", weights="none")
    _, pixel_range = load_backbone_with_range(spec, (32, 32, 3))
    assert pixel_range.name == OWN_PREPROCESSING and "mobilenet_v3.preprocess_input" in pixel_range.reason


def test_the_backbone_feeds_the_detected_range_and_the_composed_model_keeps_it(tmp_path: Path) -> None:
    original = preprocessing_classifier(keras.layers.Rescaling(1 / 255), SHAPE)
    original.save(tmp_path / "rescaling.keras")
    backbone, pixel_range = load_backbone_with_range(parse_backbone(str(tmp_path / "rescaling.keras")), SHAPE)
    assert pixel_range.name == "0-255" and "Rescaling(scale=0.00392157" in pixel_range.reason
    images = pixels()
    penultimate = keras.Model(original.input, original.get_layer("penultimate").output)
    features = backbone.predict(images, verbose=0)
    np.testing.assert_allclose(features, penultimate.predict(images * 255.0, verbose=0), rtol=1e-5, atol=1e-6)
    # Backbone + head as one model, saved and reloaded in the form evaluate, freeze and predict read.
    head = build_feature_head(features.shape[1], 3)
    compose(backbone, head).save(tmp_path / "composed.keras")
    from models import builders

    composed = builders.load_trained_model(tmp_path / "composed.keras")
    np.testing.assert_allclose(composed.predict(images, verbose=0), head.predict(features, verbose=0),
                               rtol=1e-5, atol=1e-6)
    tfpipe_own = detect_input_range(composed)  # a tfpipe model takes [0, 1], whatever its backbone took inside
    assert tfpipe_own is not None and tfpipe_own.name == "0-1" and "tfpipe model" in tfpipe_own.reason


def test_a_given_range_overrides_the_detected_one(tmp_path: Path) -> None:
    original = preprocessing_classifier(keras.layers.Rescaling(1 / 255), SHAPE)
    original.save(tmp_path / "rescaling.keras")
    spec = parse_backbone(str(tmp_path / "rescaling.keras"), input_range="0-1")
    backbone, pixel_range = load_backbone_with_range(spec, SHAPE)
    assert pixel_range == InputRange("0-1", "given (input_range)")
    penultimate = keras.Model(original.input, original.get_layer("penultimate").output)
    np.testing.assert_allclose(backbone.predict(pixels(), verbose=0), penultimate.predict(pixels(), verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_pixel_range_maps_zero_to_one_onto_each_range() -> None:
    x = np.array([[0.0, 0.5, 1.0]], np.float32)
    assert PixelRange("0-255")(x).numpy().tolist() == [[0.0, 127.5, 255.0]]
    assert PixelRange("-1-1")(x).numpy().tolist() == [[-1.0, 0.0, 1.0]]
    assert PixelRange("0-1")(x).numpy().tolist() == [[0.0, 0.5, 1.0]]
    with pytest.raises(ValueError, match="input_range must be one of 0-1, 0-255, -1-1, got '0-100'"):
        PixelRange("0-100")


def test_bad_input_ranges_are_refused_by_name(tmp_path: Path) -> None:
    assert parse_input_range(" 0-255 ") == "0-255" and parse_input_range("AUTO") == "auto"
    with pytest.raises(ValueError, match=r"input range must be one of auto, 0-1, 0-255, -1-1 .*got '0-100'"):
        parse_input_range("0-100")
    small_classifier(SHAPE).save(tmp_path / "small.keras")
    with pytest.raises(ValueError, match="got '255'"):
        parse_backbone(str(tmp_path / "small.keras"), input_range="255")
    with pytest.raises(ValueError, match="input_range='0-255' applies to model and freeze backbones only"):
        parse_backbone("keras:MobileNetV3Small", input_range="0-255")
