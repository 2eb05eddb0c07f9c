"""Model registry and builders: shapes, softmax outputs, multi-head, names, and that one can learn."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from models.builders import MODEL_BUILDERS, build_model  # noqa: E402

# Small input shapes and hyper-parameters per builder, so every test stays fast.
SMALL_CASES = {
    "mlp": ((8, 8, 1), {"hidden_units": (16,)}),
    "lenet5": ((28, 28, 1), {}),
    "hwdb_cnn": ((16, 16, 1), {"dense_units": 32}),
    "hwdb_cnn_large": ((16, 16, 1), {"filters": (8, 16), "dense_units": 16}),
    "captcha_cnn": ((20, 40, 3), {"filters": (8, 16)}),
    "resnet_cifar": ((32, 32, 3), {"depth": 8, "base_width": 4}),
    "small_cnn": ((32, 32, 3), {"filters": (8, 16)}),
}


def test_every_registered_builder_has_a_small_case() -> None:
    assert set(SMALL_CASES) == set(MODEL_BUILDERS)


def _random_images(count: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


@pytest.mark.parametrize("name", sorted(SMALL_CASES))
def test_single_head_outputs_probabilities(name: str) -> None:
    shape, hparams = SMALL_CASES[name]
    model = build_model(name, input_shape=shape, num_classes=5, **hparams)

    probabilities = np.asarray(model(_random_images(3, shape), training=False))

    assert probabilities.shape == (3, 5)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-5)
    assert model.inputs[0].name == "image" or model.layers[0].name == "image"
    assert model.output_shape == (None, 5)
    assert model.layers[-1].name == "probabilities"


@pytest.mark.parametrize("name", sorted(SMALL_CASES))
def test_multi_head_outputs_one_softmax_per_head(name: str) -> None:
    shape, hparams = SMALL_CASES[name]
    model = build_model(name, input_shape=shape, num_classes=26, num_heads=4, **hparams)

    probabilities = np.asarray(model(_random_images(2, shape), training=False))

    assert probabilities.shape == (2, 4, 26)
    np.testing.assert_allclose(probabilities.sum(axis=-1), np.ones((2, 4)), atol=1e-5)


def test_builders_are_pure_functions_of_their_hyper_parameters() -> None:
    shape, hparams = SMALL_CASES["hwdb_cnn_large"]
    first = build_model("hwdb_cnn_large", input_shape=shape, num_classes=7, **hparams)
    second = build_model("hwdb_cnn_large", input_shape=shape, num_classes=7, **hparams)
    wider = build_model("hwdb_cnn_large", input_shape=shape, num_classes=7, filters=(8, 32), dense_units=16)

    assert [layer.name for layer in first.layers] == [layer.name for layer in second.layers]
    assert first.count_params() == second.count_params()
    assert wider.count_params() > first.count_params()


def test_resnet_depth_controls_number_of_blocks() -> None:
    shallow = build_model("resnet_cifar", input_shape=(32, 32, 3), num_classes=10, depth=8, base_width=4)
    deeper = build_model("resnet_cifar", input_shape=(32, 32, 3), num_classes=10, depth=14, base_width=4)

    def count_adds(model: keras.Model) -> int:
        return sum(isinstance(layer, keras.layers.Add) for layer in model.layers)

    assert count_adds(shallow) == 3
    assert count_adds(deeper) == 6


def test_resnet_rejects_depth_not_of_form_6n_plus_2() -> None:
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet_cifar", input_shape=(32, 32, 3), num_classes=10, depth=10)


def test_unknown_model_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'vgg99'.*captcha_cnn.*lenet5"):
        build_model("vgg99", input_shape=(8, 8, 1), num_classes=3)


def test_unknown_hyper_parameter_is_rejected() -> None:
    with pytest.raises(TypeError):
        build_model("mlp", input_shape=(8, 8, 1), num_classes=3, no_such_option=1)


def test_invalid_head_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        build_model("mlp", input_shape=(8, 8, 1), num_classes=3, num_heads=0)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", input_shape=(8, 8, 1), num_classes=1)


def test_multi_head_model_learns_a_tiny_problem() -> None:
    """Each head must learn its own target: head h predicts the brightness level of column block h."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(96, 2))
    images = np.zeros((96, 4, 8, 1), np.float32)
    images[:, :, :4, 0] = (labels[:, 0] / 2.0)[:, None, None]
    images[:, :, 4:, 0] = (labels[:, 1] / 2.0)[:, None, None]
    model = build_model("mlp", input_shape=(4, 8, 1), num_classes=3, num_heads=2, hidden_units=(32,), dropout=0)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", metrics=["accuracy"])

    history = model.fit(images, labels, batch_size=32, epochs=15, verbose=0)

    losses = history.history["loss"]
    assert losses[-1] < 0.5 * losses[0]
    predictions = np.asarray(model.predict(images, verbose=0)).argmax(axis=-1)
    assert (predictions == labels).mean() > 0.9


def test_cnn_fit_on_random_data_decreases_loss() -> None:
    keras.utils.set_random_seed(1)
    shape, hparams = SMALL_CASES["lenet5"]
    images = _random_images(64, shape, seed=1)
    labels = np.random.default_rng(1).integers(0, 4, size=64)
    model = build_model("lenet5", input_shape=shape, num_classes=4, **hparams)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")

    losses = model.fit(images, labels, batch_size=16, epochs=8, verbose=0).history["loss"]

    assert losses[-1] < losses[0]
