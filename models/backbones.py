"""Backbone loaders for bottleneck features: a `BackboneSpec` -> a Keras model from pixels to features.

`load_backbone` returns a ``keras.Model`` taking what every tfpipe model takes (float32 pixels in [0, 1]
of the dataset's shape ``(H, W, C)``, C = 1 or 3, on an input named ``image``) and returning pooled
features ``(batch, D)`` float32 on a layer named ``features``. A Keras head called on its output makes ONE
Keras model from images to probabilities, which saves as ``.keras`` (every custom layer here is
registered) and exports with ``tasks.export.freeze.export_serving_model`` like any other tfpipe model.

Per kind (``models/backbone_spec.py`` parses the spec; this module uses only its attributes, so
``models`` imports nothing from ``tasks`` at run time):

- **keras**: ``keras.applications.<Name>(include_top=False, pooling="avg", input_shape=(S, S, 3))``
  with ``weights`` None (``"none"``), ``"imagenet"`` (from the Keras cache ``~/.keras/models``, else
  Keras downloads it) or a weights file. Pixels are repeated to 3 channels when C = 1, resized to S x S
  (bilinear, aspect ratio not kept, like the export's decoding), scaled to 0-255 and passed through the
  application's own ``keras.applications.<module>.preprocess_input``.
- **model**: a ``.keras`` file. Feature = output of the top-level layer ``spec.layer``, or by default the
  input of the last Dense layer (Dropout layers right before it are skipped: identical at inference, and a
  frozen backbone must not drop features while a head trains). When the last Dense sits in a nested model
  (a backbone + head model), the features are taken inside it: for a head, its input, i.e. the
  backbone's features. Features of rank 3 or 4 are global-average
  pooled. Input size and channels are the loaded model's (a model without a fixed H, W gets the
  dataset's size); channels are adapted (1 -> 3 repeated, 3 -> 1 by ITU-R 601 luma, as
  ``tf.image.rgb_to_grayscale``). Pixels are then scaled from tfpipe's [0, 1] to the range the model
  takes (`PixelRange`): ``spec.input_range``, or with ``auto`` the range its leading ``Rescaling`` or
  ``Normalization`` layer implies (`detect_input_range`), else [0, 1] as they are.
- **freeze**: a tfpipe freeze directory: ``<dir>/model.keras`` as for **model**, input size and
  channels from ``<dir>/frozen_graph.json`` ``image_shape``; a tfpipe model takes [0, 1] pixels, so ``auto``
  feeds them as they are.
- **graph**: a frozen GraphDef whose ``input_tensor`` takes one encoded JPEG (scalar string) and whose
  ``output_tensor`` is the feature (e.g. the 2015 Inception-v3 graph: ``DecodeJpeg/contents:0`` ->
  ``pool_3/_reshape:0`` (1, 2048)). ``BatchNormWithGlobalNormalization`` nodes (removed at GraphDef version
  9; TF 2 refuses to import them) are rewritten into the same arithmetic (`rewrite_batch_norm_nodes`).
  Inside the model each image is quantised to uint8 (round(x * 255)), encoded with ``tf.io.encode_jpeg``
  (quality `GRAPH_JPEG_QUALITY`) and run through the graph one at a time (``tf.map_fn``); the graph does
  its own resizing. The ``.pb`` bytes are stored inside a saved ``.keras`` file (the layer's own
  "variables"), so a composed model needs no path to the original graph.

The backbone network's weights are frozen (``trainable=False``; BatchNormalization then runs in inference
mode). ``trainable_top_layers=N`` unfreezes its top N layers that hold weights, except BatchNormalization
layers, which stay frozen (the usual Keras fine-tuning practice). The graph kind has no weights to
unfreeze.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from models.files import FROZEN_GRAPH_INFO_FILE, MODEL_FILE
from models.heads import image_input

if TYPE_CHECKING:
    from models.backbone_spec import BackboneSpec

FEATURES_NAME = "features"
NETWORK_NAME = "backbone_network"
GRAPH_JPEG_QUALITY = 95  # part of backbone_spec.LOADER_VERSION: changing it changes graph features
BATCH_NORM_OP = "BatchNormWithGlobalNormalization"
_PACKAGE = "tfpipe_backbones"
_GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale

# The pixel ranges a model or freeze backbone's network may take (models.backbone_spec.INPUT_RANGES), by
# their bounds; "auto" reads the range from the network's leading layers. Keras applications and frozen
# graphs do their own preprocessing (OWN_PREPROCESSING).
INPUT_RANGE_AUTO = "auto"
UNIT_RANGE = "0-1"
RANGE_BOUNDS: dict[str, tuple[float, float]] = {UNIT_RANGE: (0.0, 1.0), "0-255": (0.0, 255.0), "-1-1": (-1.0, 1.0)}
INPUT_RANGES = tuple(RANGE_BOUNDS)
OWN_PREPROCESSING = "own"
# Where a network's first arithmetic layer puts pixels of the range it was made for: [0, 1] or [-1, 1] after a
# Rescaling, about [-2, 2] after a Normalization (pixels standardised per channel).
_NORMALISED_INTERVALS = ((0.0, 1.0), (-1.0, 1.0), (-2.0, 2.0))


class BackboneError(ValueError):
    """A backbone that cannot be loaded or does not fit the dataset's images."""


@dataclass(frozen=True)
class InputRange:
    """The pixel range a backbone's network is fed (tfpipe's [0, 1] pixels scaled to it), and why that one.

    ``name`` is one of `INPUT_RANGES`, or `OWN_PREPROCESSING` for the kinds that preprocess pixels themselves.
    """

    name: str
    reason: str


def load_backbone(
    spec: BackboneSpec, image_shape: tuple[int, int, int], *, trainable_top_layers: int = 0
) -> keras.Model:
    """The feature extractor ``spec`` names, for images of ``image_shape`` (see the module docstring)."""
    model, _ = load_backbone_with_range(spec, image_shape, trainable_top_layers=trainable_top_layers)
    return model


def load_backbone_with_range(
    spec: BackboneSpec, image_shape: tuple[int, int, int], *, trainable_top_layers: int = 0
) -> tuple[keras.Model, InputRange]:
    """`load_backbone`'s model, and the pixel range its network is fed (given, detected or tfpipe's own)."""
    image_shape = _checked_image_shape(image_shape)
    if trainable_top_layers < 0:
        raise ValueError(f"trainable_top_layers must be >= 0, got {trainable_top_layers}")
    if spec.kind == "keras":
        module = spec.application.preprocess_module
        own = InputRange(OWN_PREPROCESSING, f"keras.applications.{module}.preprocess_input of 0-255 pixels")
        return _keras_application_backbone(spec, image_shape, trainable_top_layers), own
    if spec.kind == "model":
        model = _load_keras_file(Path(spec.target))
        pixel_range = chosen_input_range(spec.input_range, detect_input_range(model))
        backbone = _keras_model_backbone(model, spec.layer, image_shape, _model_input_shape(model),
                                         trainable_top_layers, kind="model", input_range=pixel_range.name)
        return backbone, pixel_range
    if spec.kind == "freeze":
        tfpipe_own = InputRange(UNIT_RANGE, "a tfpipe freeze directory: its model takes tfpipe's [0, 1] pixels")
        pixel_range = chosen_input_range(spec.input_range, tfpipe_own)
        return _freeze_backbone(spec, image_shape, trainable_top_layers, pixel_range.name), pixel_range
    if spec.kind == "graph":
        if trainable_top_layers:
            raise BackboneError(f"{spec.target}: a frozen GraphDef has no weights to unfreeze (trainable_top_layers)")
        own = InputRange(OWN_PREPROCESSING, "JPEG bytes of 0-255 pixels, decoded by the graph")
        return _graph_backbone(spec, image_shape), own
    raise BackboneError(f"unknown backbone kind {spec.kind!r}")


def chosen_input_range(requested: str, detected: InputRange | None) -> InputRange:
    """The range a model or freeze backbone is fed: ``requested`` unless it is ``auto``; then ``detected``, or
    tfpipe's [0, 1] as they are when nothing was detected."""
    if requested in RANGE_BOUNDS:
        return InputRange(requested, "given (input_range)")
    if requested != INPUT_RANGE_AUTO:
        raise BackboneError(f"input_range must be one of {', '.join((INPUT_RANGE_AUTO, *INPUT_RANGES))}, "
                            f"got {requested!r}")
    if detected is not None:
        return detected
    return InputRange(UNIT_RANGE, "no leading Rescaling or Normalization layer: tfpipe's [0, 1] pixels as they are")


def feature_width(model: keras.Model) -> int:
    """D, the width of the ``(batch, D)`` features a `load_backbone` model outputs."""
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"model {model.name!r} outputs shape {shape}, not (batch, D) features")
    return int(shape[-1])


def _checked_image_shape(image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape[:2]) < 1:
        raise ValueError(f"image_shape must be (H, W, C) with C in (1, 3), got {image_shape!r}")
    return shape


# ---------------------------------------------------------------------------------------------------
# Layers shared by the kinds (registered so a composed model reloads from .keras)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelAdapter(keras.layers.Layer):
    """(…, C) -> (…, channels): 1 -> 3 repeats the grey channel; 3 -> 1 takes the luma (rgb_to_grayscale)."""

    def __init__(self, channels: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = int(channels)

    def call(self, x: Any) -> Any:
        have = x.shape[-1]
        if have == self.channels:
            return x
        if have == 1 and self.channels == 3:
            return keras.ops.concatenate([x, x, x], axis=-1)
        if have == 3 and self.channels == 1:
            weights = keras.ops.convert_to_tensor(_GREY_WEIGHTS, dtype=x.dtype)
            return keras.ops.sum(x * weights, axis=-1, keepdims=True)
        raise ValueError(f"cannot adapt {have} channels to {self.channels}")

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.channels)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ApplicationPreprocess(keras.layers.Layer):
    """[0, 1] pixels -> ``keras.applications.<module>.preprocess_input(pixels * 255)``."""

    def __init__(self, module: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.module = module
        self._preprocess = getattr(keras.applications, module).preprocess_input

    def call(self, x: Any) -> Any:
        return self._preprocess(x * 255.0)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "module": self.module}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PixelRange(keras.layers.Layer):
    """tfpipe's [0, 1] pixels -> the range a backbone network takes (``"0-255"``: x * 255, ``"-1-1"``: 2x - 1)."""

    def __init__(self, input_range: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if input_range not in RANGE_BOUNDS:
            raise ValueError(f"input_range must be one of {', '.join(INPUT_RANGES)}, got {input_range!r}")
        self.input_range = input_range
        low, high = RANGE_BOUNDS[input_range]
        self.scale, self.offset = high - low, low

    def call(self, x: Any) -> Any:
        return x * self.scale + self.offset

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_range": self.input_range}


def _adapt_pixels(x: Any, image_shape: tuple[int, int, int], size: tuple[int | None, int | None], channels: int) -> Any:
    """Channels first (cheaper to resize one channel than three), then resize when the size differs."""
    if image_shape[2] != channels:
        x = ChannelAdapter(channels, name="adapt_channels")(x)
    height = size[0] if size[0] is not None else image_shape[0]
    width = size[1] if size[1] is not None else image_shape[1]
    if (height, width) != image_shape[:2]:
        x = keras.layers.Resizing(height, width, interpolation="bilinear", name="resize")(x)
    return x


def _finish(inputs: Any, features: Any, name: str) -> keras.Model:
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="feature_pool")(features)
    elif len(features.shape) == 3:
        features = keras.layers.GlobalAveragePooling1D(name="feature_pool")(features)
    elif len(features.shape) != 2:
        raise BackboneError(f"feature tensor of shape {tuple(features.shape)} cannot be pooled to (batch, D)")
    features = keras.layers.Activation("linear", dtype="float32", name=FEATURES_NAME)(features)
    return keras.Model(inputs, features, name=name)


def _freeze_network(network: keras.Model, trainable_top_layers: int) -> None:
    """Freeze ``network``; unfreeze its top N layers holding weights (BatchNormalization stays frozen)."""
    network.trainable = False
    if not trainable_top_layers:
        return
    network.trainable = True
    weighted = [layer for layer in network.layers if layer.weights]
    top = {id(layer) for layer in weighted[-trainable_top_layers:]}
    for layer in network.layers:
        layer.trainable = id(layer) in top and not isinstance(layer, keras.layers.BatchNormalization)


# ---------------------------------------------------------------------------------------------------
# keras: keras.applications


def _keras_application_backbone(spec: BackboneSpec, image_shape: tuple[int, int, int], top: int) -> keras.Model:
    app = spec.application
    builder = getattr(keras.applications, app.name)
    weights: str | None = None if spec.weights == "none" else spec.weights
    cached = app.imagenet_weights_path()
    try:
        network = builder(
            include_top=False,
            weights=weights,
            pooling="avg",
            input_shape=(app.input_size, app.input_size, 3),
        )
    except Exception as err:
        if weights == "imagenet" and not cached.is_file():
            raise BackboneError(
                f"keras:{app.name}: ImageNet weights are not in the Keras cache ({cached}) and downloading them "
                f"failed ({type(err).__name__}: {err}). Without internet, copy {app.notop_weights_file} there, "
                "or use weights='none' or a weights file"
            ) from err
        raise BackboneError(f"keras:{app.name} (weights={spec.weights!r}): cannot build: {err}") from err
    network.name = NETWORK_NAME
    _freeze_network(network, top)
    inputs = image_input(image_shape)
    x = _adapt_pixels(inputs, image_shape, (app.input_size, app.input_size), 3)
    x = ApplicationPreprocess(app.preprocess_module, name="preprocess")(x)
    return _finish(inputs, network(x), name=f"backbone_{app.name.lower()}")


# ---------------------------------------------------------------------------------------------------
# model and freeze: a Keras 3 model file


def _load_keras_file(path: Path) -> keras.Model:
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as err:
        raise BackboneError(f"{path}: cannot load the Keras model: {type(err).__name__}: {err}") from err


def _model_input_shape(model: keras.Model) -> tuple[int | None, int | None, int]:
    if len(model.inputs) != 1:
        raise BackboneError(f"model {model.name!r} has {len(model.inputs)} inputs; a backbone takes one image")
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise BackboneError(f"model {model.name!r} takes input of shape {shape}, not (H, W, 1|3) images")
    return shape


def _freeze_backbone(spec: BackboneSpec, image_shape: tuple[int, int, int], top: int,
                     input_range: str) -> keras.Model:
    directory = Path(spec.target)
    try:
        info = json.loads((directory / FROZEN_GRAPH_INFO_FILE).read_text(encoding="utf-8"))
        frozen_shape = tuple(int(d) for d in info["image_shape"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BackboneError(f"{directory / FROZEN_GRAPH_INFO_FILE}: unreadable: {err}") from err
    if len(frozen_shape) != 3 or frozen_shape[2] not in (1, 3):
        raise BackboneError(f"{directory / FROZEN_GRAPH_INFO_FILE}: bad image_shape {frozen_shape}")
    model = _load_keras_file(directory / MODEL_FILE)
    model_shape = _model_input_shape(model)
    if any(have is not None and have != want for have, want in zip(model_shape, frozen_shape, strict=True)):
        raise BackboneError(
            f"{directory}: {MODEL_FILE} takes {model_shape} but {FROZEN_GRAPH_INFO_FILE} says {frozen_shape}"
        )
    return _keras_model_backbone(model, spec.layer, image_shape, frozen_shape, top, kind="freeze",
                                 input_range=input_range)


def _keras_model_backbone(
    model: keras.Model,
    layer: str,
    image_shape: tuple[int, int, int],
    input_shape: tuple[int | None, int | None, int],
    top: int,
    *,
    kind: str,
    input_range: str = UNIT_RANGE,
) -> keras.Model:
    feature = _feature_tensor(model, layer)
    network = keras.Model(model.inputs[0], feature, name=NETWORK_NAME)
    _freeze_network(network, top)
    inputs = image_input(image_shape)
    x = _adapt_pixels(inputs, image_shape, input_shape[:2], input_shape[2])
    if input_range != UNIT_RANGE:  # resizing and the luma are linear: scaling after them gives the same pixels
        x = PixelRange(input_range, name="input_range")(x)
    return _finish(inputs, network(x), name=f"backbone_{kind}")


# ---------------------------------------------------------------------------------------------------
# The pixel range a Keras model takes, read from its leading layers


def detect_input_range(model: keras.Model) -> InputRange | None:
    """The pixel range ``model`` says it takes, or None when its leading layers say nothing.

    The first layer that changes pixel values decides (nested models are entered; resizing, cropping, padding
    and augmentation layers, which are off at inference, are looked through):

    - ``Rescaling(scale, offset)`` and ``Normalization`` (an affine map, ``1/std``, ``-mean/std``): the range
      of `INPUT_RANGES` that the map puts closest onto a normalised interval ([0, 1], [-1, 1], or about
      [-2, 2] for standardised pixels); per-channel values are averaged. ``Rescaling(1/255)`` and
      ``Rescaling(1/127.5, offset=-1)`` take 0-255; a Normalization adapted on 0-255 pixels takes 0-255.
    - a tfpipe layer (a composed tfpipe model): tfpipe's [0, 1].
    """
    layer = _first_value_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Rescaling):
        scale = float(np.mean(np.asarray(layer.scale, dtype=np.float64)))
        offset = float(np.mean(np.asarray(layer.offset, dtype=np.float64)))
        return _affine_range(scale, offset, f"leading Rescaling(scale={scale:.6g}, offset={offset:.6g})")
    if isinstance(layer, keras.layers.Normalization) and not layer.invert and layer.mean is not None:
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), dtype=np.float64)
        std = np.sqrt(np.maximum(np.asarray(keras.ops.convert_to_numpy(layer.variance), dtype=np.float64), 1e-12))
        scale, offset = float(np.mean(1.0 / std)), float(np.mean(-mean / std))
        where = f"leading Normalization(mean={float(np.mean(mean)):.4g}, std={float(np.mean(std)):.4g})"
        return _affine_range(scale, offset, where)
    if isinstance(layer, _TFPIPE_LAYERS):
        return InputRange(UNIT_RANGE, f"a tfpipe model (leading {type(layer).__name__}): tfpipe's [0, 1] pixels")
    return None


def _affine_range(scale: float, offset: float, where: str) -> InputRange:
    """The range whose pixels ``x * scale + offset`` puts closest onto a normalised interval (ties: 0-1)."""

    def mapped(name: str) -> tuple[float, float]:
        low, high = sorted(bound * scale + offset for bound in RANGE_BOUNDS[name])
        return low, high

    def mismatch(name: str) -> float:
        low, high = mapped(name)
        return min((abs(low - a) + abs(high - b)) / (b - a) for a, b in _NORMALISED_INTERVALS)

    name = min(INPUT_RANGES, key=mismatch)
    low, high = mapped(name)
    return InputRange(name, f"{where} maps {name} pixels to [{low:.3g}, {high:.3g}]")


def _first_value_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The first layer of ``model`` (entering nested models) that is not one of `_RANGE_KEEPING_LAYERS`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            inner = _first_value_layer(layer)
            if inner is not None:
                return inner
        elif not isinstance(layer, _RANGE_KEEPING_LAYERS):
            return layer
    return None


def _feature_tensor(model: keras.Model, layer: str) -> Any:
    """The output of layer ``layer``, or else the input of the last Dense layer (Dropout skipped)."""
    if layer:
        try:
            return model.get_layer(layer).output
        except ValueError as err:
            names = ", ".join(item.name for item in model.layers)
            raise BackboneError(f"model {model.name!r} has no layer {layer!r}; its layers: {names}") from err
    feature = _default_feature(model)
    if feature is None:
        raise BackboneError(f"model {model.name!r} has no Dense layer; name the feature layer (layer=...)")
    return feature


def _default_feature(model: keras.Model) -> Any:
    """The input of the last Dense layer, looking into a nested model when that is where the last Dense is
    (a backbone + head model: the head's input, i.e. the backbone's features). None when there is none."""
    for item in reversed(model.layers):
        if isinstance(item, keras.layers.Dense):
            return _skip_dropout(_single_input(item))
        if isinstance(item, keras.Model) and len(item.inputs) == 1:
            inner = _default_feature(item)
            if inner is None:
                continue
            outer = _single_input(item)
            if inner is item.inputs[0]:
                return _skip_dropout(outer)
            return keras.Model(item.inputs[0], inner, name=f"{item.name}_features")(outer)
    return None


def _skip_dropout(tensor: Any) -> Any:
    while True:
        producer = tensor._keras_history.operation
        if not isinstance(producer, keras.layers.Dropout):
            return tensor
        tensor = _single_input(producer)


def _single_input(layer: keras.layers.Layer) -> Any:
    """The one tensor ``layer`` was called on in its model (``layer.input`` of a nested model is its own
    input tensor, not the outer one, hence the inbound node)."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise BackboneError(f"layer {layer.name!r} is called {len(nodes)} times in the model; name the feature layer")
    tensors = nodes[0].input_tensors
    if len(tensors) != 1:
        raise BackboneError(f"layer {layer.name!r} has {len(tensors)} inputs; name the feature layer")
    return tensors[0]


# Layers that leave the range of pixel values as it is (augmentation is off at inference).
_RANGE_KEEPING_LAYERS: tuple[type, ...] = tuple(
    getattr(keras.layers, name) for name in (
        "InputLayer", "Resizing", "CenterCrop", "Cropping2D", "ZeroPadding2D", "Reshape", "Identity", "Dropout",
        "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomCrop", "RandomContrast",
        "RandomBrightness",
    ) if hasattr(keras.layers, name)
) + (ChannelAdapter,)
# tfpipe's own layers leading a composed tfpipe model, which takes tfpipe's [0, 1] pixels.
_TFPIPE_LAYERS = (PixelRange, ApplicationPreprocess)


# ---------------------------------------------------------------------------------------------------
# graph: a frozen GraphDef taking encoded JPEG bytes


def rewrite_batch_norm_nodes(graph_def: Any) -> tuple[Any, int]:
    """A copy of ``graph_def`` with every ``BatchNormWithGlobalNormalization`` node replaced by arithmetic.

    The op (inputs t, m, v, beta, gamma; attrs T, variance_epsilon, scale_after_normalization) computes,
    in its kernel's order, ``(t - m) * (rsqrt(v + epsilon) * gamma) + beta`` (without ``* gamma`` when
    scale_after_normalization is false). Each node becomes ``Sub``, ``AddV2``, ``Rsqrt``, (``Mul``),
    ``Mul``, ``AddV2`` in that order; the last keeps the node's name, so its consumers are unchanged.
    Returns (new GraphDef, number of nodes rewritten).
    """
    import tensorflow as tf

    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    taken = {node.name for node in graph_def.node}
    rewritten = 0
    for node in graph_def.node:
        if node.op != BATCH_NORM_OP:
            out.node.add().CopyFrom(node)
            continue
        dtype = tf.dtypes.as_dtype(node.attr["T"].type)
        if not dtype.is_floating:
            raise BackboneError(f"{BATCH_NORM_OP} node {node.name!r} has type {dtype.name}; only floats are supported")
        data = [name for name in node.input if not name.startswith("^")]
        control = [name for name in node.input if name.startswith("^")]
        if len(data) != 5:
            raise BackboneError(f"{BATCH_NORM_OP} node {node.name!r} has {len(data)} inputs, expected 5")
        t, mean, variance, beta, gamma = data
        prefix = _unique_prefix(f"{node.name}/tfpipe_bn", taken)

        def add(name: str, op: str, inputs: list[str], node: Any = node, prefix: str = prefix) -> str:
            new = out.node.add()
            new.name, new.op, new.device = name, op, node.device
            new.input.extend(inputs)
            new.attr["T"].type = node.attr["T"].type
            return name

        epsilon = out.node.add()
        epsilon.name, epsilon.op, epsilon.device = f"{prefix}/epsilon", "Const", node.device
        epsilon.attr["dtype"].type = node.attr["T"].type
        epsilon.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(np.asarray(node.attr["variance_epsilon"].f, dtype=dtype.as_numpy_dtype))
        )
        centered = add(f"{prefix}/centered", "Sub", [t, mean])
        shifted = add(f"{prefix}/variance_plus_epsilon", "AddV2", [variance, epsilon.name])
        factor = add(f"{prefix}/rsqrt", "Rsqrt", [shifted])
        if node.attr["scale_after_normalization"].b:
            factor = add(f"{prefix}/scale", "Mul", [factor, gamma])
        scaled = add(f"{prefix}/scaled", "Mul", [centered, factor])
        add(node.name, "AddV2", [scaled, beta, *control])
        rewritten += 1
    return out, rewritten


def _unique_prefix(base: str, taken: set[str]) -> str:
    prefix, index = base, 1
    while any(name == prefix or name.startswith(prefix + "/") for name in taken):
        prefix, index = f"{base}_{index}", index + 1
    taken.add(prefix)
    return prefix


def _check_graph_ops(graph_def: Any, where: str) -> None:
    """Refuse, by name, ops this TensorFlow does not register or no longer runs (after the rewrite)."""
    from tensorflow.python.framework import op_def_registry, versions

    problems = []
    for op in sorted({node.op for node in graph_def.node}):
        op_def = op_def_registry.get(op)
        if op_def is None:
            problems.append(f"{op} (not registered in this TensorFlow)")
        elif op_def.deprecation.version and op_def.deprecation.version <= versions.GRAPH_DEF_VERSION:
            problems.append(f"{op} (removed at GraphDef version {op_def.deprecation.version})")
    if problems:
        raise BackboneError(f"{where}: the graph uses ops that cannot run here: {', '.join(problems)}")


def wrap_frozen_graph(graph_bytes: bytes, input_tensor: str, output_tensor: str, *, where: str = "graph") -> Any:
    """The (rewritten) GraphDef as a TF function from one scalar string to the output tensor."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(graph_bytes)
    except Exception as err:  # google.protobuf.message.DecodeError
        raise BackboneError(f"{where}: not a GraphDef: {err}") from err
    graph_def, _ = rewrite_batch_norm_nodes(graph_def)
    _check_graph_ops(graph_def, where)
    names = {node.name for node in graph_def.node}
    for role, tensor in (("input", input_tensor), ("output", output_tensor)):
        if tensor.rpartition(":")[0] not in names:
            raise BackboneError(f"{where}: no {role} tensor {tensor!r} (no node of that name in the graph)")

    def imported(encoded: Any) -> Any:
        (output,) = tf.compat.v1.import_graph_def(
            graph_def, input_map={input_tensor: encoded}, return_elements=[output_tensor], name="graph"
        )
        return output

    try:
        return tf.compat.v1.wrap_function(imported, [tf.TensorSpec([], tf.string, name="jpeg")])
    except Exception as err:
        raise BackboneError(f"{where}: cannot import the graph: {type(err).__name__}: {err}") from err


class _GraphHolder:
    """Keeps the wrapped graph function out of Keras and TF tracking (a plain object, not a trackable)."""

    def __init__(self) -> None:
        self.graph_bytes: bytes | None = None
        self.function: Any = None


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FrozenGraphFeatures(keras.layers.Layer):
    """(B, H, W, 3) [0, 1] pixels -> (B, D): each image as JPEG bytes through a frozen GraphDef.

    The GraphDef's bytes are the layer's only state: `save_own_variables` stores them (as uint8) in the
    ``.keras`` file and `load_own_variables` restores and checks them against ``graph_sha256``.
    """

    def __init__(
        self,
        input_tensor: str,
        output_tensor: str,
        width: int,
        graph_sha256: str,
        jpeg_quality: int = GRAPH_JPEG_QUALITY,
        **kwargs: Any,
    ) -> None:
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.input_tensor = input_tensor
        self.output_tensor = output_tensor
        self.width = int(width)
        self.graph_sha256 = graph_sha256
        self.jpeg_quality = int(jpeg_quality)
        self._holder = _GraphHolder()

    def set_graph(self, graph_bytes: bytes, function: Any = None) -> None:
        digest = "sha256:" + hashlib.sha256(graph_bytes).hexdigest()
        if digest != self.graph_sha256:
            raise BackboneError(f"layer {self.name!r}: graph bytes have digest {digest}, expected {self.graph_sha256}")
        if function is None:
            function = wrap_frozen_graph(graph_bytes, self.input_tensor, self.output_tensor, where=self.name)
        self._holder.graph_bytes = graph_bytes
        self._holder.function = function

    def build(self, input_shape: tuple[Any, ...]) -> None:
        self.built = True

    def call(self, images: Any) -> Any:
        import tensorflow as tf

        function = self._holder.function
        if function is None:
            raise BackboneError(f"layer {self.name!r} has no graph loaded")
        pixels = tf.cast(tf.clip_by_value(tf.round(images * 255.0), 0.0, 255.0), tf.uint8)

        def one(image: Any) -> Any:
            encoded = tf.io.encode_jpeg(image, quality=self.jpeg_quality)
            return tf.reshape(tf.cast(function(encoded), tf.float32), [self.width])

        return tf.map_fn(one, pixels, fn_output_signature=tf.TensorSpec([self.width], tf.float32))

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.width)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_tensor": self.input_tensor,
            "output_tensor": self.output_tensor,
            "width": self.width,
            "graph_sha256": self.graph_sha256,
            "jpeg_quality": self.jpeg_quality,
        }

    def save_own_variables(self, store: Any) -> None:
        if self._holder.graph_bytes is None:
            raise BackboneError(f"layer {self.name!r} has no graph to save")
        store["graph_def"] = np.frombuffer(self._holder.graph_bytes, dtype=np.uint8)

    def load_own_variables(self, store: Any) -> None:
        self.set_graph(np.asarray(store["graph_def"], dtype=np.uint8).tobytes())


def _graph_width(function: Any, where: str) -> int:
    """D from the output's static shape, else from one run on a small grey JPEG."""
    import tensorflow as tf

    shape = function.outputs[0].shape
    if shape.rank is not None and shape.rank >= 1 and shape[-1] is not None and shape.num_elements() is not None:
        width = int(shape.num_elements())
    else:
        probe = tf.io.encode_jpeg(tf.fill([8, 8, 3], tf.constant(128, tf.uint8)), quality=GRAPH_JPEG_QUALITY)
        width = int(tf.size(function(probe)).numpy())
    if width < 1:
        raise BackboneError(f"{where}: output tensor has no elements")
    return width


def _graph_backbone(spec: BackboneSpec, image_shape: tuple[int, int, int]) -> keras.Model:
    path = Path(spec.target)
    try:
        graph_bytes = path.read_bytes()
    except OSError as err:
        raise BackboneError(f"{path}: cannot read the graph: {err}") from err
    function = wrap_frozen_graph(graph_bytes, spec.input_tensor, spec.output_tensor, where=str(path))
    layer = FrozenGraphFeatures(
        spec.input_tensor,
        spec.output_tensor,
        _graph_width(function, str(path)),
        "sha256:" + hashlib.sha256(graph_bytes).hexdigest(),
        name="frozen_graph",
    )
    layer.set_graph(graph_bytes, function)
    inputs = image_input(image_shape)
    x = _adapt_pixels(inputs, image_shape, image_shape[:2], 3)
    return _finish(inputs, layer(x), name="backbone_graph")
