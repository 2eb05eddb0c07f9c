"""Test support: tiny backbones of every kind `models.backbones.load_backbone` reads, in the real formats.

- a Keras application's weights file (built with ``weights=None``; no ImageNet download is possible here);
- a small tfpipe-style ``.keras`` classifier (features = the input of its ``logits`` Dense layer);
- a keras-io-style classifier that preprocesses its own pixels (a leading ``Rescaling`` or ``Normalization``);
- a tfpipe-freeze-like directory: ``model.keras`` plus the real ``frozen_graph.json`` format;
- a hand-written GraphDef with the 2015 Inception-v3 graph's tensor names (``DecodeJpeg/contents`` ->
  ``pool_3/_reshape``) and legacy ``BatchNormWithGlobalNormalization`` nodes, written as raw NodeDefs
  (TF 2 refuses to create that op: it was removed at GraphDef version 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

FEATURE_LAYER = "embedding"


def save_application_weights(path: Path, name: str = "MobileNetV3Small", *, seed: int = 0) -> Path:
    """Build ``keras.applications.<name>`` as tfpipe does (no top, avg pooling, default size) and save its
    random weights to ``path`` (a ``.weights.h5`` file)."""
    from models.backbone_spec import keras_application

    app = keras_application(name)
    keras.utils.set_random_seed(seed)
    network = getattr(keras.applications, app.name)(
        include_top=False, weights=None, pooling="avg", input_shape=(app.input_size, app.input_size, 3)
    )
    network.save_weights(path)
    return path


def small_classifier(
    input_shape: tuple[int, int, int] = (16, 16, 3), *, width: int = 8, classes: int = 3, seed: int = 0
) -> keras.Model:
    """A tfpipe-style model: ``image`` -> conv -> pool -> Dense ``embedding`` (width) -> Dropout -> Dense
    ``logits`` -> softmax ``probabilities``. Its default features are the embedding's output."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(width, activation="relu", name=FEATURE_LAYER)(x)
    x = keras.layers.Dropout(0.5, name="head_dropout")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="small_classifier")


def preprocessing_classifier(
    preprocessing: keras.layers.Layer, input_shape: tuple[int, int, int] = (32, 32, 3), *, seed: int = 0
) -> keras.Model:
    """keras-io's convention: ``image`` -> ``preprocessing`` (e.g. ``Rescaling(1/255)``) -> conv -> pool ->
    Dense ``penultimate`` (8) -> Dense ``old_head``. Biases as training leaves them, not Keras's initial 0:
    the conv units' are negative (each fires on the colours it detects, not on dark pixels), the penultimate's
    positive. Fed pixels 255 times smaller than it takes, no conv unit fires and every image gets the same
    features (the bias path alone); fed the pixels it takes, its features tell the fake image classes apart."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape, name="image")
    x = preprocessing(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=keras.initializers.RandomNormal(stddev=1.0),
                            bias_initializer=keras.initializers.Constant(-0.5), name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(8, activation="relu", bias_initializer=keras.initializers.Constant(1.0),
                           name="penultimate")(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="old_head")(x)
    return keras.Model(inputs, outputs, name="preprocessing_classifier")


def write_freeze_dir(directory: Path, model: keras.Model, image_shape: tuple[int, int, int]) -> Path:
    """What the freeze stage leaves that the freeze kind reads: ``model.keras`` and ``frozen_graph.json``."""
    from tasks.export.freeze import FreezeInfo, write_freeze_info

    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    classes = int(model.outputs[0].shape[-1])
    info = FreezeInfo(
        input_tensor="image_bytes:0",
        output_tensors={key: f"output/{key}:0" for key in ("probabilities", "top_k_indices", "top_k_probabilities")},
        image_shape=tuple(image_shape),
        num_heads=0,
        top_k=min(3, classes),
        num_classes=classes,
    )
    write_freeze_info(directory, info)
    return directory


# ---------------------------------------------------------------------------------------------------
# An Inception-v3-2015-like frozen GraphDef, written node by node.


@dataclass
class BatchNormParams:
    mean: np.ndarray
    variance: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    epsilon: float
    scale_after_normalization: bool


def batch_norm_reference(t: np.ndarray, p: BatchNormParams) -> np.ndarray:
    """BatchNormWithGlobalNormalization's definition (its kernel's formula), in float64 numpy."""
    factor = 1.0 / np.sqrt(p.variance.astype(np.float64) + np.float64(np.float32(p.epsilon)))
    if p.scale_after_normalization:
        factor = factor * p.gamma
    return (t.astype(np.float64) - p.mean) * factor + p.beta


def random_batch_norm(rng: np.random.Generator, depth: int, *, scale: bool) -> BatchNormParams:
    return BatchNormParams(
        mean=rng.normal(0, 0.5, depth).astype(np.float32),
        variance=rng.uniform(0.2, 2.0, depth).astype(np.float32),
        beta=rng.normal(0, 0.3, depth).astype(np.float32),
        gamma=rng.uniform(0.5, 1.5, depth).astype(np.float32),
        epsilon=0.001,
        scale_after_normalization=scale,
    )


class _GraphWriter:
    def __init__(self, producer: int) -> None:
        self.graph_def = tf.compat.v1.GraphDef()
        self.graph_def.versions.producer = producer

    def node(self, name: str, op: str, inputs: tuple[str, ...] = (), **attrs: object) -> str:
        node = self.graph_def.node.add()
        node.name, node.op = name, op
        node.input.extend(inputs)
        for key, value in attrs.items():
            attr = node.attr[key]
            if isinstance(value, tf.dtypes.DType):
                attr.type = value.as_datatype_enum
            elif isinstance(value, bool):
                attr.b = value
            elif isinstance(value, int):
                attr.i = value
            elif isinstance(value, float):
                attr.f = value
            elif isinstance(value, bytes):
                attr.s = value
            elif isinstance(value, list):
                attr.list.i.extend(value)
            elif isinstance(value, tf.TensorShape):
                attr.shape.CopyFrom(value.as_proto())
            else:
                attr.tensor.CopyFrom(value)  # a TensorProto
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        array = np.asarray(value)
        return self.node(name, "Const", dtype=tf.as_dtype(array.dtype), value=tf.make_tensor_proto(array))

    def batch_norm(self, name: str, t: str, p: BatchNormParams) -> str:
        inputs = tuple(
            self.const(f"{name}/{part}", getattr(p, attr))
            for part, attr in (("moving_mean", "mean"), ("moving_variance", "variance"), ("beta", "beta"),
                               ("gamma", "gamma"))
        )
        return self.node(name, "BatchNormWithGlobalNormalization", (t, *inputs), T=tf.float32,
                         variance_epsilon=float(p.epsilon), scale_after_normalization=p.scale_after_normalization)


def inception_like_graph_def(
    *, width: int = 16, size: int = 17, seed: int = 0, producer: int = 3, contents_as_const: bool = False
) -> tf.compat.v1.GraphDef:
    """JPEG bytes on ``DecodeJpeg/contents:0`` -> (1, width) on ``pool_3/_reshape:0``.

    DecodeJpeg (3 channels) -> Cast -> ExpandDims -> ResizeBilinear (size x size) -> (x - 128) / 128 ->
    Conv2D 3x3/2 VALID -> BatchNormWithGlobalNormalization (scaled) -> Relu -> Conv2D 3x3 SAME ->
    BatchNormWithGlobalNormalization (not scaled) -> Relu -> AvgPool over the whole map -> Reshape. As in
    the 2015 graph, ``DecodeJpeg/contents`` may be a Const (fed by name) instead of a Placeholder.
    """
    rng = np.random.default_rng(seed)
    g = _GraphWriter(producer)
    if contents_as_const:
        contents = g.const("DecodeJpeg/contents", np.array(b"", dtype=object))
    else:
        contents = g.node("DecodeJpeg/contents", "Placeholder", dtype=tf.string, shape=tf.TensorShape([]))
    decoded = g.node("DecodeJpeg", "DecodeJpeg", (contents,), channels=3, ratio=1, fancy_upscaling=True,
                     try_recover_truncated=False, acceptable_fraction=1.0, dct_method=b"")
    cast = g.node("Cast", "Cast", (decoded,), SrcT=tf.uint8, DstT=tf.float32)
    batched = g.node("ExpandDims", "ExpandDims", (cast, g.const("ExpandDims/dim", np.int32(0))),
                     T=tf.float32, Tdim=tf.int32)
    resized = g.node("ResizeBilinear", "ResizeBilinear",
                     (batched, g.const("ResizeBilinear/size", np.array([size, size], np.int32))),
                     T=tf.float32, align_corners=False)
    centred = g.node("Sub", "Sub", (resized, g.const("Sub/y", np.float32(128.0))), T=tf.float32)
    scaled = g.node("Mul", "Mul", (centred, g.const("Mul/y", np.float32(1.0 / 128.0))), T=tf.float32)
    channels = 8
    kernel = rng.normal(0, 0.3, (3, 3, 3, channels)).astype(np.float32)
    x = g.node("conv/Conv2D", "Conv2D", (scaled, g.const("conv/conv2d_params", kernel)), T=tf.float32,
               strides=[1, 2, 2, 1], padding=b"VALID", data_format=b"NHWC", use_cudnn_on_gpu=True)
    x = g.batch_norm("conv/batchnorm", x, random_batch_norm(rng, channels, scale=True))
    x = g.node("conv", "Relu", (x,), T=tf.float32)
    kernel = rng.normal(0, 0.3, (3, 3, channels, width)).astype(np.float32)
    x = g.node("conv_1/Conv2D", "Conv2D", (x, g.const("conv_1/conv2d_params", kernel)), T=tf.float32,
               strides=[1, 1, 1, 1], padding=b"SAME", data_format=b"NHWC", use_cudnn_on_gpu=True)
    x = g.batch_norm("conv_1/batchnorm", x, random_batch_norm(rng, width, scale=False))
    x = g.node("conv_1", "Relu", (x,), T=tf.float32)
    side = (size - 3) // 2 + 1
    x = g.node("pool_3", "AvgPool", (x,), T=tf.float32, ksize=[1, side, side, 1], strides=[1, 1, 1, 1],
               padding=b"VALID", data_format=b"NHWC")
    g.node("pool_3/_reshape", "Reshape", (x, g.const("pool_3/_reshape/shape", np.array([1, width], np.int32))),
           T=tf.float32, Tshape=tf.int32)
    return g.graph_def


def batch_norm_only_graph_def(
    p: BatchNormParams, shape: tuple[int, ...], *, producer: int = 3
) -> tf.compat.v1.GraphDef:
    """``t`` (float32 placeholder of ``shape``) -> one BatchNormWithGlobalNormalization node ``bn``."""
    g = _GraphWriter(producer)
    t = g.node("t", "Placeholder", dtype=tf.float32, shape=tf.TensorShape(list(shape)))
    g.batch_norm("bn", t, p)
    return g.graph_def


def write_graph(path: Path, graph_def: tf.compat.v1.GraphDef) -> Path:
    path.write_bytes(graph_def.SerializeToString())
    return path


def run_graph_def(graph_def: tf.compat.v1.GraphDef, feeds: dict[str, object], fetch: str) -> np.ndarray:
    """Run ``graph_def`` in a TF1 Session (the way the 2015 graph was meant to be run)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(graph.get_tensor_by_name(fetch),
                           {graph.get_tensor_by_name(name): value for name, value in feeds.items()})
