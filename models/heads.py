"""Shared input and classification-head helpers used by every model builder.

Every builder names its input layer ``image`` and its output ``probabilities``. Single-label models
output ``(batch, num_classes)`` softmax probabilities; multi-head models (one head per captcha letter)
output ``(batch, num_heads, num_classes)`` with the softmax over the last axis.
"""

from __future__ import annotations

import keras

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
BN_MOMENTUM = 0.9


def image_input(input_shape: tuple[int, int, int]) -> keras.KerasTensor:
    """The model input: float32 pixels in [0, 1], shape (H, W, C)."""
    if len(input_shape) != 3 or any(int(d) <= 0 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) > 0, got {input_shape!r}")
    return keras.Input(shape=tuple(int(d) for d in input_shape), name=INPUT_NAME, dtype="float32")


def classification_head(
    features: keras.KerasTensor, *, num_classes: int, num_heads: int = 1, dropout: float = 0.0
) -> keras.KerasTensor:
    """Dense logits for ``num_heads`` independent ``num_classes``-way softmaxes.

    ``features`` may be of any rank; it is flattened first. The softmax runs in float32 so the
    probabilities stay well formed under a mixed_float16 policy.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    x = features
    if len(x.shape) > 2:
        x = keras.layers.Flatten(name="head_flatten")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_heads * num_classes, name="logits")(x)
    if num_heads > 1:
        logits = keras.layers.Reshape((num_heads, num_classes), name="logits_per_head")(logits)
    return keras.layers.Activation("softmax", dtype="float32", name=OUTPUT_NAME)(logits)


def conv_bn(
    x: keras.KerasTensor,
    filters: int,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    name: str,
    weight_decay: float = 0.0,
) -> keras.KerasTensor:
    """Conv (no bias, he_normal, optional L2) -> BatchNorm: the unit of every conv block here."""
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay > 0 else None
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
        name=f"{name}_conv",
    )(x)
    # Momentum 0.9 (PyTorch's default) rather than Keras's 0.99: the moving statistics that inference uses
    # settle within ~50 steps, so a short run on small data is not evaluated with half-initialised statistics.
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)


def conv_bn_relu(
    x: keras.KerasTensor,
    filters: int,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    name: str,
    weight_decay: float = 0.0,
) -> keras.KerasTensor:
    """Conv (no bias) -> BatchNorm -> ReLU, the block shared by the larger CNNs."""
    x = conv_bn(x, filters, kernel_size=kernel_size, strides=strides, name=name, weight_decay=weight_decay)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def build_feature_head(feature_dim: int, num_classes: int, *, hidden_units: int = 0, dropout: float = 0.0,
                       name: str = "feature_head") -> keras.Model:
    """The new final layer of transfer learning: features (B, feature_dim) -> probabilities, optionally through
    one hidden ReLU layer; dropout before the softmax when asked."""
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if hidden_units > 0:
        x = keras.layers.Dense(hidden_units, activation="relu", name="head_hidden")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=1, dropout=dropout)
    return keras.Model(inputs, outputs, name=name)


def compose(backbone: keras.Model, head: keras.Model, name: str = "backbone_and_head") -> keras.Model:
    """ONE model taking the backbone's input (images in [0, 1]) and returning the head's probabilities."""
    inputs = keras.Input(backbone.input_shape[1:], name=INPUT_NAME)
    outputs = head(backbone(inputs))
    return keras.Model(inputs, keras.layers.Identity(name=OUTPUT_NAME)(outputs), name=name)
