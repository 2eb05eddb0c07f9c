"""Multi-layer perceptron: flatten, hidden dense layers with dropout, classification head."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from models.heads import classification_head, image_input


def build_mlp(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    num_heads: int = 1,
    hidden_units: Sequence[int] = (512, 256),
    dropout: float = 0.2,
    activation: str = "relu",
) -> keras.Model:
    inputs = image_input(input_shape)
    x = keras.layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_units):
        x = keras.layers.Dense(units, activation=activation, name=f"dense_{index}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    outputs = classification_head(x, num_classes=num_classes, num_heads=num_heads)
    return keras.Model(inputs, outputs, name="mlp")
