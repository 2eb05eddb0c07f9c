"""Which backbone turns images into bottleneck features, and the digest that keys cached features.

Plain code: no TensorFlow and no Keras, here or in the digest (``tfpipe status`` computes keys and must stay
fast). The loaders live in ``models/backbones.py``; they read a `BackboneSpec` and, for Keras applications,
the `KerasApplication` row this module keeps (``spec.application``).

A backbone is named by one text (``--backbone SPEC``), recognised by `parse_backbone`:

==============================  ========  ==========================================================
text                            kind      what is loaded
==============================  ========  ==========================================================
``keras:InceptionV3``           keras     ``keras.applications.InceptionV3(include_top=False,
                                          pooling="avg")`` at its default input size, with
                                          ``weights`` = ``"imagenet"`` (Keras cache), ``"none"``
                                          (random) or a weights file path
``path/to/model.keras``         model     a Keras 3 model file; feature = output of ``layer``, by
                                          default the input of its last Dense layer
``path/to/graph.pb``            graph     a frozen GraphDef taking one encoded JPEG on
                                          ``input_tensor``, giving (1, D) features on
                                          ``output_tensor`` (the 2015 Inception-v3 graph's names
                                          by default)
``artifacts/freeze/Freeze-...`` freeze    a tfpipe freeze directory (``frozen_graph.json`` and
                                          ``model.keras``); feature as for ``model``, image shape
                                          from ``frozen_graph.json``
==============================  ========  ==========================================================

SavedModel directories are recognised and refused: Keras 3 reloads them only as an opaque
``keras.layers.TFSMLayer`` over a serving endpoint, which exposes no inner layer to take features from.

The model and freeze kinds also say which pixel range their network takes (``input_range``): ``0-1``
(tfpipe's own pixels), ``0-255`` or ``-1-1``, or ``auto`` to read it from the model's leading
``Rescaling``/``Normalization`` layer (``models.backbones.detect_input_range``). The keras and graph kinds
do their own preprocessing and take ``auto`` only.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from models.files import FROZEN_GRAPH_INFO_FILE, MODEL_FILE, SAVED_MODEL_FILE

KINDS = ("keras", "model", "graph", "freeze")
DEFAULT_INPUT_TENSOR = "DecodeJpeg/contents:0"
DEFAULT_OUTPUT_TENSOR = "pool_3/_reshape:0"
WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
KERAS_PREFIX = "keras:"
MODEL_SUFFIX = ".keras"
GRAPH_SUFFIX = ".pb"
# The pixel ranges a backbone network may take (models.backbones.INPUT_RANGES; that module imports Keras),
# and the value that reads the range from the model itself.
INPUT_RANGE_AUTO = "auto"
INPUT_RANGES = ("0-1", "0-255", "-1-1")
# Bump when models/backbones.py changes the features it computes for the same spec and files (resizing,
# preprocessing, JPEG quality of the graph kind, pooling): every backbone digest moves with it.
LOADER_VERSION = 1


class KerasApplication(NamedTuple):
    """One ``keras.applications`` model: name, default (square) input size, the ``keras.applications``
    submodule whose ``preprocess_input`` it expects (fed 0-255 pixels), and the file name Keras caches its
    ImageNet weights without top under (``<keras home>/models/<file>``; taken from the Keras 3.15 source,
    for the default ``alpha`` and input size, which are the ones tfpipe builds)."""

    name: str
    input_size: int
    preprocess_module: str
    notop_weights_file: str

    def imagenet_weights_path(self) -> Path:
        """Where ``keras.utils.get_file(..., cache_subdir="models")`` finds (or would download) the weights."""
        return keras_cache_dir() / "models" / self.notop_weights_file


KERAS_APPLICATIONS: tuple[KerasApplication, ...] = (
    KerasApplication("ConvNeXtBase", 224, "convnext", "convnext_base_notop.h5"),
    KerasApplication("ConvNeXtLarge", 224, "convnext", "convnext_large_notop.h5"),
    KerasApplication("ConvNeXtSmall", 224, "convnext", "convnext_small_notop.h5"),
    KerasApplication("ConvNeXtTiny", 224, "convnext", "convnext_tiny_notop.h5"),
    KerasApplication("ConvNeXtXLarge", 224, "convnext", "convnext_xlarge_notop.h5"),
    KerasApplication("DenseNet121", 224, "densenet", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("DenseNet169", 224, "densenet", "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("DenseNet201", 224, "densenet", "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("EfficientNetB0", 224, "efficientnet", "efficientnetb0_notop.h5"),
    KerasApplication("EfficientNetB1", 240, "efficientnet", "efficientnetb1_notop.h5"),
    KerasApplication("EfficientNetB2", 260, "efficientnet", "efficientnetb2_notop.h5"),
    KerasApplication("EfficientNetB3", 300, "efficientnet", "efficientnetb3_notop.h5"),
    KerasApplication("EfficientNetB4", 380, "efficientnet", "efficientnetb4_notop.h5"),
    KerasApplication("EfficientNetB5", 456, "efficientnet", "efficientnetb5_notop.h5"),
    KerasApplication("EfficientNetB6", 528, "efficientnet", "efficientnetb6_notop.h5"),
    KerasApplication("EfficientNetB7", 600, "efficientnet", "efficientnetb7_notop.h5"),
    KerasApplication("EfficientNetV2B0", 224, "efficientnet_v2", "efficientnetv2-b0_notop.h5"),
    KerasApplication("EfficientNetV2B1", 240, "efficientnet_v2", "efficientnetv2-b1_notop.h5"),
    KerasApplication("EfficientNetV2B2", 260, "efficientnet_v2", "efficientnetv2-b2_notop.h5"),
    KerasApplication("EfficientNetV2B3", 300, "efficientnet_v2", "efficientnetv2-b3_notop.h5"),
    KerasApplication("EfficientNetV2L", 480, "efficientnet_v2", "efficientnetv2-l_notop.h5"),
    KerasApplication("EfficientNetV2M", 480, "efficientnet_v2", "efficientnetv2-m_notop.h5"),
    KerasApplication("EfficientNetV2S", 384, "efficientnet_v2", "efficientnetv2-s_notop.h5"),
    KerasApplication(
        "InceptionResNetV2", 299, "inception_resnet_v2",
        "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    KerasApplication("InceptionV3", 299, "inception_v3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("MobileNet", 224, "mobilenet", "mobilenet_1_0_224_tf_no_top.h5"),
    KerasApplication(
        "MobileNetV2", 224, "mobilenet_v2", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    ),
    KerasApplication("MobileNetV3Large", 224, "mobilenet_v3", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    KerasApplication("MobileNetV3Small", 224, "mobilenet_v3", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    KerasApplication("NASNetLarge", 331, "nasnet", "nasnet_large_no_top.h5"),
    KerasApplication("NASNetMobile", 224, "nasnet", "nasnet_mobile_no_top.h5"),
    KerasApplication("ResNet101", 224, "resnet", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("ResNet101V2", 224, "resnet_v2", "resnet101v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("ResNet152", 224, "resnet", "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("ResNet152V2", 224, "resnet_v2", "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("ResNet50", 224, "resnet", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("ResNet50V2", 224, "resnet_v2", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("VGG16", 224, "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("VGG19", 224, "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    KerasApplication("Xception", 299, "xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
)
_APPLICATIONS_BY_LOWER = {app.name.lower(): app for app in KERAS_APPLICATIONS}

ACCEPTED = (
    f"accepted: '{KERAS_PREFIX}<Application>' (a keras.applications name, e.g. keras:InceptionV3), a Keras "
    f"model file '*{MODEL_SUFFIX}', a frozen GraphDef file '*{GRAPH_SUFFIX}', or a tfpipe freeze directory "
    f"(holding {FROZEN_GRAPH_INFO_FILE} and {MODEL_FILE})"
)


@dataclass(frozen=True)
class BackboneSpec:
    """A parsed ``--backbone`` text (see the module docstring and `parse_backbone`).

    ``target`` is the application name (keras kind) or a resolved absolute path. ``weights`` matters for the keras
    kind only (``"imagenet"``, ``"none"`` or a resolved weights file path); ``layer`` and ``input_range`` for
    the model and freeze kinds (``""`` = the input of the last Dense layer; ``"auto"`` = the range the model's
    leading layers say); the tensor names for the graph kind.
    """

    kind: str
    target: str
    weights: str = WEIGHTS_IMAGENET
    layer: str = ""
    input_tensor: str = DEFAULT_INPUT_TENSOR
    output_tensor: str = DEFAULT_OUTPUT_TENSOR
    input_range: str = INPUT_RANGE_AUTO

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"backbone kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.input_range not in (INPUT_RANGE_AUTO, *INPUT_RANGES):
            raise ValueError(f"input_range must be one of {', '.join((INPUT_RANGE_AUTO, *INPUT_RANGES))}, "
                             f"got {self.input_range!r}")

    @property
    def application(self) -> KerasApplication:
        """The keras kind's `KerasApplication` row; ValueError for another kind or an unknown name."""
        if self.kind != "keras":
            raise ValueError(f"a {self.kind!r} backbone is not a Keras application")
        return keras_application(self.target)


def keras_application(name: str) -> KerasApplication:
    """The supported application called ``name`` (case-insensitive); ValueError with a suggestion if none."""
    app = _APPLICATIONS_BY_LOWER.get(name.strip().lower())
    if app is not None:
        return app
    close = difflib.get_close_matches(name.strip().lower(), list(_APPLICATIONS_BY_LOWER), n=1, cutoff=0.5)
    hint = f" (did you mean {KERAS_PREFIX}{_APPLICATIONS_BY_LOWER[close[0]].name}?)" if close else ""
    names = ", ".join(app.name for app in KERAS_APPLICATIONS)
    raise ValueError(f"unknown Keras application {name!r}{hint}; supported applications: {names}")


def parse_input_range(text: str) -> str:
    """``text`` as one of ``auto`` and `INPUT_RANGES` (surrounding blanks ignored); ValueError naming the choices."""
    value = text.strip().lower()
    if value != INPUT_RANGE_AUTO and value not in INPUT_RANGES:
        choices = ", ".join((INPUT_RANGE_AUTO, *INPUT_RANGES))
        raise ValueError(f"input range must be one of {choices} (the pixel range the backbone takes), got {text!r}")
    return value


def keras_cache_dir() -> Path:
    """Keras 3's home as ``keras.src.backend.config`` and ``keras.utils.get_file`` compute it, without Keras.

    ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable); an
    existing directory that is not writable is replaced by ``/tmp/.keras`` as get_file does. A missing
    directory is kept: Keras creates it when it is imported.
    """
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if os.path.exists(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return Path(home)


# ---------------------------------------------------------------------------------------------------
# Parsing


def parse_backbone(
    text: str,
    *,
    weights: str = WEIGHTS_IMAGENET,
    layer: str = "",
    input_tensor: str = DEFAULT_INPUT_TENSOR,
    output_tensor: str = DEFAULT_OUTPUT_TENSOR,
    input_range: str = INPUT_RANGE_AUTO,
) -> BackboneSpec:
    """The `BackboneSpec` a ``--backbone`` text names; ValueError naming the text when it names none.

    Paths must exist and are resolved (``~`` expanded, made absolute, symlinks followed). Options that
    the kind would ignore are refused rather than silently dropped: ``weights`` other than the default
    for a non-keras kind, ``layer`` and an ``input_range`` other than ``auto`` for the keras and graph
    kinds, non-default tensor names for a non-graph kind. Tensor names without an output index get ``:0``.
    """
    raw = text
    try:
        input_range = parse_input_range(input_range)
    except ValueError as err:
        raise ValueError(f"backbone {raw!r}: {err}") from None
    text = text.strip()
    if not text:
        raise ValueError(f"backbone {raw!r}: empty backbone spec; {ACCEPTED}")
    if text.lower().startswith(KERAS_PREFIX):
        try:
            app = keras_application(text[len(KERAS_PREFIX) :])
        except ValueError as err:
            raise ValueError(f"backbone {raw!r}: {err}") from None
        _refuse_options(raw, "keras", layer=layer, input_tensor=input_tensor, output_tensor=output_tensor,
                        input_range=input_range)
        return BackboneSpec(kind="keras", target=app.name, weights=_parsed_weights(raw, weights))

    path = Path(os.path.expanduser(text))
    if not path.exists():
        raise ValueError(f"backbone {raw!r}: no such file or directory{_application_hint(text)}; {ACCEPTED}")
    path = Path(os.path.realpath(path))
    kind = _kind_of_path(raw, path)
    if weights != WEIGHTS_IMAGENET:
        raise ValueError(f"backbone {raw!r}: weights={weights!r} applies to {KERAS_PREFIX} backbones only")
    _refuse_options(raw, kind, layer=layer, input_tensor=input_tensor, output_tensor=output_tensor,
                    input_range=input_range)
    if kind == "graph":
        return BackboneSpec(
            kind=kind,
            target=str(path),
            input_tensor=_tensor_name(raw, input_tensor),
            output_tensor=_tensor_name(raw, output_tensor),
        )
    return BackboneSpec(kind=kind, target=str(path), layer=layer.strip(), input_range=input_range)


def _kind_of_path(raw: str, path: Path) -> str:
    if path.is_dir():
        if (path / FROZEN_GRAPH_INFO_FILE).is_file():
            if not (path / MODEL_FILE).is_file():
                raise ValueError(
                    f"backbone {raw!r}: tfpipe freeze directory without {MODEL_FILE} (frozen by a tfpipe "
                    f"that did not keep the Keras model); freeze it again, or pass its {MODEL_FILE} file"
                )
            return "freeze"
        if (path / SAVED_MODEL_FILE).is_file():
            raise ValueError(_saved_model_refusal(raw, path))
        raise ValueError(f"backbone {raw!r}: directory is neither a tfpipe freeze directory nor a model; {ACCEPTED}")
    if not path.is_file():
        raise ValueError(f"backbone {raw!r}: not a regular file or directory; {ACCEPTED}")
    if path.name == SAVED_MODEL_FILE:
        raise ValueError(_saved_model_refusal(raw, path.parent))
    suffix = path.suffix.lower()
    if suffix == MODEL_SUFFIX:
        return "model"
    if suffix == GRAPH_SUFFIX:
        return "graph"
    raise ValueError(f"backbone {raw!r}: unrecognised file type {path.suffix or '(no suffix)'!r}; {ACCEPTED}")


def _saved_model_refusal(raw: str, saved_model_dir: Path) -> str:
    message = (
        f"backbone {raw!r}: SavedModel directories are not supported as backbones: Keras 3 reloads a "
        "SavedModel only as an opaque keras.layers.TFSMLayer over its serving endpoint, which exposes no inner "
        "layer to take features from (and keras.models.load_model refuses SavedModels). Pass the model saved as "
        f"'{MODEL_SUFFIX}', or a frozen GraphDef '{GRAPH_SUFFIX}' with --input-tensor/--output-tensor"
    )
    if (saved_model_dir.parent / FROZEN_GRAPH_INFO_FILE).is_file():
        message += f"; it is part of the tfpipe freeze directory {str(saved_model_dir.parent)!r}: pass that"
    return message


def _application_hint(text: str) -> str:
    lowered = text.lower()
    if lowered in _APPLICATIONS_BY_LOWER:
        return f" (did you mean {KERAS_PREFIX}{_APPLICATIONS_BY_LOWER[lowered].name}?)"
    if os.sep in text or "." in text:
        return ""
    close = difflib.get_close_matches(lowered, list(_APPLICATIONS_BY_LOWER), n=1, cutoff=0.6)
    return f" (did you mean {KERAS_PREFIX}{_APPLICATIONS_BY_LOWER[close[0]].name}?)" if close else ""


def _parsed_weights(raw: str, weights: str) -> str:
    value = weights.strip()
    if value.lower() in (WEIGHTS_IMAGENET, WEIGHTS_NONE):
        return value.lower()
    path = Path(os.path.expanduser(value))
    if not value or not path.is_file():
        raise ValueError(
            f"backbone {raw!r}: weights must be 'imagenet', 'none' or an existing weights file, got {weights!r}"
        )
    return os.path.realpath(path)


def _refuse_options(raw: str, kind: str, *, layer: str, input_tensor: str, output_tensor: str,
                    input_range: str) -> None:
    if layer.strip() and kind in ("keras", "graph"):
        raise ValueError(f"backbone {raw!r}: layer={layer!r} applies to model and freeze backbones only")
    if input_range != INPUT_RANGE_AUTO and kind in ("keras", "graph"):
        raise ValueError(f"backbone {raw!r}: input_range={input_range!r} applies to model and freeze backbones only "
                         "(a Keras application or a frozen graph does its own preprocessing)")
    if kind != "graph" and (input_tensor, output_tensor) != (DEFAULT_INPUT_TENSOR, DEFAULT_OUTPUT_TENSOR):
        raise ValueError(f"backbone {raw!r}: input/output tensor names apply to frozen GraphDef (.pb) backbones only")


def _tensor_name(raw: str, name: str) -> str:
    name = name.strip()
    op, sep, index = name.rpartition(":")
    if not sep:
        op, index = name, "0"
    if not op or not index.isdigit():
        raise ValueError(f"backbone {raw!r}: bad tensor name {name!r} (expected 'op_name:index')")
    return f"{op}:{int(index)}"
