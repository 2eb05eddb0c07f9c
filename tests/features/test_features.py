"""Nearly constant bottleneck features are refused with one line; real spreads, dead units, duplicate images and
splits too small to measure pass."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.features.extract import MIN_FEATURE_SPREAD, ConstantFeaturesError, check_features_vary, feature_spread


def keys(count: int) -> np.ndarray:
    return np.asarray([i.to_bytes(32, "little") for i in range(count)], dtype="S32")


def test_spread_is_the_median_relative_spread_across_images() -> None:
    rng = np.random.default_rng(0)
    varied = rng.uniform(0.0, 2.0, (50, 16))
    assert feature_spread(varied) > 0.3
    biases = rng.uniform(0.5, 2.0, 16)
    assert feature_spread(biases + 4e-4 * rng.standard_normal((50, 16))) < MIN_FEATURE_SPREAD
    assert feature_spread(varied[:1]) is None  # one image: no spread to measure
    assert feature_spread(np.zeros((5, 4))) == 0.0


def test_dead_units_do_not_make_live_features_look_constant() -> None:
    rng = np.random.default_rng(1)
    features = np.zeros((40, 8))
    features[:, :2] = rng.uniform(0.0, 1.0, (40, 2))  # six of eight ReLU units dead on this data
    assert feature_spread(features) > 0.3


def test_constant_features_fail_with_one_line_naming_the_backbone_and_the_hint() -> None:
    features = np.tile(np.array([1.0, 2.0, 0.5], np.float32), (123, 1))
    features += np.random.default_rng(2).normal(0, 4e-4, features.shape).astype(np.float32)
    with pytest.raises(ConstantFeaturesError) as caught:
        check_features_vary(features, keys(123), backbone="my_model.keras", hint="set Bottleneck.input_range")
    message = str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in message
    assert message.startswith("features of my_model.keras are nearly constant across 123 images (spread ")
    assert message.endswith("< 1e-03): set Bottleneck.input_range")


def test_duplicates_count_once_and_tiny_splits_pass() -> None:
    rng = np.random.default_rng(3)
    distinct = rng.uniform(0.0, 1.0, (2, 4))
    check_features_vary(distinct[[0, 0, 0, 1, 1]], keys(2)[[0, 0, 0, 1, 1]], backbone="b", hint="h")
    check_features_vary(np.tile(distinct[:1], (3, 1)), keys(1)[[0, 0, 0]], backbone="b", hint="h")  # one image
    with pytest.raises(ConstantFeaturesError, match="across 3 images"):  # three images, the same features
        check_features_vary(np.tile(distinct[:1], (3, 1)), keys(3), backbone="b", hint="h")
