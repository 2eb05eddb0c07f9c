"""ResNet for 32x32 images (He et al. 2016, CIFAR variant): depth 6n+2, three stages of basic blocks.

``depth=20, base_width=16`` is ResNet-20; ``depth=8`` is a tiny version for tests and benchmarks.
Stages after the first halve the resolution with a strided convolution and a 1x1 projection shortcut.
"""

from __future__ import annotations

import keras

from models.heads import classification_head, conv_bn, conv_bn_relu, image_input


def _basic_block(
    x: keras.KerasTensor, filters: int, *, strides: int, name: str, weight_decay: float
) -> keras.KerasTensor:
    shortcut = x
    y = conv_bn_relu(x, filters, strides=strides, name=f"{name}_a", weight_decay=weight_decay)
    y = conv_bn(y, filters, name=f"{name}_b", weight_decay=weight_decay)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, kernel_size=1, strides=strides, name=f"{name}_proj",
                           weight_decay=weight_decay)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def build_resnet_cifar(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    depth: int = 20,
    base_width: int = 16,
    weight_decay: float = 1e-4,
    dropout: float = 0.0,
) -> keras.Model:
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"resnet_cifar depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
    blocks_per_stage = (depth - 2) // 6
    inputs = image_input(input_shape)
    x = conv_bn_relu(inputs, base_width, name="stem", weight_decay=weight_decay)
    for stage in range(3):
        width = base_width * 2**stage
        for block in range(blocks_per_stage):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width, strides=strides, name=f"stage{stage}_block{block}", weight_decay=weight_decay)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name=f"resnet{depth}_cifar")
