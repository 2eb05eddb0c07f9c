"""CNN for text captchas: conv-BN-ReLU-pool blocks, then one dense layer per letter position.

The first block downsamples with a strided convolution so a 160x60 captcha costs little on a CPU;
the flattened feature map keeps horizontal position, which the per-letter heads need.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.heads import classification_head, conv_bn_relu, image_input


def build_captcha_cnn(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 4,
    filters: Sequence[int] = (16, 32, 64, 128),
    first_stride: int = 2,
    dropout: float = 0.3,
    weight_decay: float = 0.0,
    pool_last: bool = False,
    recurrent_units: int = 96,
) -> keras.Model:
    """``pool_last=False`` keeps the last block's map (3x10 for 160x60 input) so the per-letter heads still
    see where each letter is; pooling it to 1x5 leaves 640 features for four letters."""
    inputs = image_input(input_shape)
    x = inputs
    for block, width in enumerate(filters):
        strides = first_stride if block == 0 else 1
        x = conv_bn_relu(x, width, strides=strides, name=f"block{block}", weight_decay=weight_decay)
        is_last = block == len(filters) - 1
        if min(x.shape[1], x.shape[2]) >= 2 and (pool_last or not is_last):
            x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    if recurrent_units:
        x = column_sequence(x, recurrent_units)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name="captcha_cnn")


def column_sequence(features: keras.KerasTensor, units: int) -> keras.KerasTensor:
    """Read the feature map left to right with a bidirectional GRU, so each letter head can use context
    from its neighbours (letters of these captchas overlap and shift)."""
    _, height, width, channels = features.shape
    columns = keras.layers.Permute((2, 1, 3), name="columns_first")(features)
    columns = keras.layers.Reshape((width, height * channels), name="columns")(columns)
    return keras.layers.Bidirectional(keras.layers.GRU(units, return_sequences=True), name="column_gru")(columns)
