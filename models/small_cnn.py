"""A small CNN for class-per-folder photos at low resolution (64x64): trains a few thousand images in
minutes on 2 CPU cores.

Four conv-BN-ReLU stages (32, 64, 128, 192 filters), each followed by 2x2 max pooling, then global average
pooling, dropout and the softmax head. Pretrained backbones for big images come from the bottleneck stage.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.heads import classification_head, conv_bn_relu, image_input


def build_small_cnn(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    filters: Sequence[int] = (32, 64, 128, 192),
    dropout: float = 0.3,
) -> keras.Model:
    inputs = image_input(input_shape)
    x = inputs
    for stage, width in enumerate(filters, start=1):
        x = conv_bn_relu(x, width, name=f"stage{stage}")
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name="small_cnn")
