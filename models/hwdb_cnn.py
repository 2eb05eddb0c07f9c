"""CNNs for CASIA HWDB handwritten Chinese characters (3755 classes).

``hwdb_cnn`` is the classic tutorial network (conv3x3 32 -> pool -> conv3x3 64 -> pool -> dense 1024
-> dropout -> output). ``hwdb_cnn_large`` is a stronger VGG-like stack of conv-BN-ReLU blocks with
pooling, then global average pooling and a dense layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.heads import BN_MOMENTUM, classification_head, conv_bn_relu, image_input


def build_hwdb_cnn(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    dense_units: int = 1024,
    dropout: float = 0.5,
) -> keras.Model:
    inputs = image_input(input_shape)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool1")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc1")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name="hwdb_cnn")


def build_hwdb_cnn_large(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    filters: Sequence[int] = (64, 128, 256, 512),
    convs_per_block: int = 2,
    dense_units: int = 1024,
    dropout: float = 0.3,
    weight_decay: float = 0.0,
) -> keras.Model:
    inputs = image_input(input_shape)
    x = inputs
    for block, width in enumerate(filters):
        for conv in range(convs_per_block):
            x = conv_bn_relu(x, width, name=f"block{block}_{conv}", weight_decay=weight_decay)
        if min(x.shape[1], x.shape[2]) >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(dense_units, use_bias=False, name="fc1")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="fc1_bn")(x)
    x = keras.layers.ReLU(name="fc1_relu")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name="hwdb_cnn_large")
