"""The registry of Keras 3 model builders: pure functions of their hyper-parameters (``import keras``, no ``tf.*``).

Every model takes float32 pixels in [0, 1] of shape (H, W, C) on an input named ``image`` and returns
softmax probabilities named ``probabilities``: (batch, num_classes), or (batch, num_heads, num_classes)
for multi-head tasks such as captchas.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import keras

from models.captcha_cnn import build_captcha_cnn
from models.heads import INPUT_NAME, OUTPUT_NAME, classification_head
from models.hwdb_cnn import build_hwdb_cnn, build_hwdb_cnn_large
from models.lenet5 import build_lenet5
from models.mlp import build_mlp
from models.resnet_cifar import build_resnet_cifar
from models.small_cnn import build_small_cnn

MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "mlp": build_mlp,
    "lenet5": build_lenet5,
    "hwdb_cnn": build_hwdb_cnn,
    "hwdb_cnn_large": build_hwdb_cnn_large,
    "captcha_cnn": build_captcha_cnn,
    "resnet_cifar": build_resnet_cifar,
    "small_cnn": build_small_cnn,
}


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    **hparams: object,
) -> keras.Model:
    """Build the registered model ``name``; ``hparams`` go to its builder (unknown ones raise TypeError)."""
    try:
        builder = MODEL_BUILDERS[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_BUILDERS))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
    return builder(input_shape=tuple(input_shape), num_classes=num_classes, num_heads=num_heads, **hparams)


def load_trained_model(path: str | os.PathLike[str]) -> keras.Model:
    """A ``.keras`` model file as Train writes it, uncompiled. A model composed with a backbone holds tfpipe's
    own layers, which Keras finds only once their module is imported: any process may load it, not only the one
    that built it."""
    import models.backbones  # noqa: F401 - registers tfpipe's backbone layers (ChannelAdapter, PixelRange, ...)

    return keras.models.load_model(path, compile=False)


__all__ = ["INPUT_NAME", "MODEL_BUILDERS", "OUTPUT_NAME", "build_model", "classification_head", "load_trained_model"]
