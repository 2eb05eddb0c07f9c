"""Classic LeNet-5: conv5x5(6) -> pool -> conv5x5(16) -> pool -> dense 120 -> 84 -> output.

The first convolution pads "same" by default so a 28x28 MNIST digit yields the 5x5x16 feature map
the original network gets from its 32x32 padded input.
"""

from __future__ import annotations

import keras

from models.heads import classification_head, image_input


def build_lenet5(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    activation: str = "relu",
    first_padding: str = "same",
    pooling: str = "max",
    dropout: float = 0.0,
) -> keras.Model:
    pool_layer = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}[pooling]
    inputs = image_input(input_shape)
    x = keras.layers.Conv2D(6, 5, padding=first_padding, activation=activation, name="conv1")(inputs)
    x = pool_layer(2, name="pool1")(x)
    x = keras.layers.Conv2D(16, 5, padding="valid", activation=activation, name="conv2")(x)
    x = pool_layer(2, name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(120, activation=activation, name="fc1")(x)
    x = keras.layers.Dense(84, activation=activation, name="fc2")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads, dropout=dropout)
    return keras.Model(inputs, outputs, name="lenet5")
