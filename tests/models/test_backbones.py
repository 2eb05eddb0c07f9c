"""Backbone specs, digests and loaders: every kind's features equal the backbone's own, and backbone + head
saves as .keras and exports as a verified bytes-in SavedModel and frozen graph."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from models.backbone_spec import (  # noqa: E402
    KERAS_APPLICATIONS,
    BackboneSpec,
    keras_application,
    parse_backbone,
)
from models.backbones import (  # noqa: E402
    FEATURES_NAME,
    GRAPH_JPEG_QUALITY,
    BackboneError,
    load_backbone,
    rewrite_batch_norm_nodes,
    wrap_frozen_graph,
)
from models.backbones import feature_width as width_of  # noqa: E402
from models.heads import classification_head  # noqa: E402
from tasks.export.freeze import ExportJob, export_model_file, export_serving_model, verify_exported  # noqa: E402
from tasks.features.backbone_digest import IMAGENET_NOT_CACHED, backbone_digest  # noqa: E402
from tasks.runtime.fresh_process import run_in_fresh_process  # noqa: E402
from tests.fakes.backbones import (  # noqa: E402
    FEATURE_LAYER,
    batch_norm_only_graph_def,
    batch_norm_reference,
    inception_like_graph_def,
    random_batch_norm,
    run_graph_def,
    save_application_weights,
    small_classifier,
    write_freeze_dir,
    write_graph,
)

REPO = Path(__file__).resolve().parents[2]
APP = "MobileNetV3Small"  # the smallest application at its default size: ~0.9 M parameters, 576 features
APP_WIDTH = 576
GRAPH_WIDTH = 16
SMALL_SHAPE = (16, 16, 3)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One backbone of every kind on disk, plus the raw bytes formats they come in."""
    root = tmp_path_factory.mktemp("backbones")
    small = small_classifier(SMALL_SHAPE)
    small.save(root / "small.keras")
    (root / "saved_model_dir").mkdir()
    (root / "saved_model_dir" / "saved_model.pb").write_bytes(b"not really")
    return {
        "weights": save_application_weights(root / "app.weights.h5", APP),
        "model": root / "small.keras",
        "freeze": write_freeze_dir(root / "Freeze-0123456789ab", small, SMALL_SHAPE),
        "graph": write_graph(root / "classify_image_graph_def.pb", inception_like_graph_def(width=GRAPH_WIDTH)),
        "saved_model": root / "saved_model_dir",
        "root": root,
    }


def pixels(count: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """uint8 images: what the dataset's float images are made of (x / 255)."""
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# parse_backbone


def test_parse_keras_application_names_case_insensitively_and_weights() -> None:
    assert parse_backbone("keras:InceptionV3") == BackboneSpec("keras", "InceptionV3")
    spec = parse_backbone(" keras:mobilenetv3small ", weights="None")
    assert (spec.kind, spec.target, spec.weights) == ("keras", APP, "none")
    assert spec.application == keras_application(APP)
    assert spec.application.input_size == 224 and spec.application.preprocess_module == "mobilenet_v3"
    assert keras_application("inceptionv3").input_size == 299


def test_parse_paths_by_what_they_hold(files: dict[str, Path], tmp_path: Path) -> None:
    assert parse_backbone(str(files["model"])) == BackboneSpec("model", str(files["model"]))
    assert parse_backbone(str(files["model"]), layer="conv").layer == "conv"
    assert parse_backbone(str(files["freeze"])) == BackboneSpec("freeze", str(files["freeze"]))
    graph = parse_backbone(str(files["graph"]), input_tensor="DecodeJpeg/contents", output_tensor="pool_3:0")
    assert (graph.kind, graph.input_tensor, graph.output_tensor) == ("graph", "DecodeJpeg/contents:0", "pool_3:0")
    weights = parse_backbone("keras:MobileNetV3Small", weights=str(files["weights"]))
    assert weights.weights == str(files["weights"])
    # Relative paths and symlinks resolve to the real absolute path.
    link = tmp_path / "link.pb"
    link.symlink_to(files["graph"])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert parse_backbone("link.pb").target == str(files["graph"].resolve())
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("keras:InceptoinV3", {}, "did you mean keras:InceptionV3"),
        ("keras:NoSuchNet", {}, "supported applications: ConvNeXtBase"),
        ("InceptionV3", {}, "did you mean keras:InceptionV3"),
        ("mobilenetv2", {}, "did you mean keras:MobileNetV2"),
        ("{root}/missing.pb", {}, "no such file or directory"),
        ("", {}, "empty backbone spec"),
        ("{root}/saved_model_dir", {}, "SavedModel directories are not supported"),
        ("{root}/saved_model_dir/saved_model.pb", {}, "SavedModel directories are not supported"),
        ("{root}/small.keras", {"weights": "none"}, "applies to keras: backbones only"),
        ("{root}/small.keras", {"input_tensor": "x:0"}, "apply to frozen GraphDef"),
        ("{root}/classify_image_graph_def.pb", {"layer": "conv"}, "applies to model and freeze"),
        ("{root}/classify_image_graph_def.pb", {"output_tensor": "pool_3:x"}, "bad tensor name"),
        ("keras:VGG16", {"layer": "block5_pool"}, "applies to model and freeze"),
        ("keras:VGG16", {"weights": "{root}/missing.h5"}, "weights must be 'imagenet', 'none' or an existing"),
        ("{root}/app.weights.h5", {}, "unrecognised file type '.h5'"),
        ("{root}", {}, "neither a tfpipe freeze directory nor a model"),
    ],
)
def test_parse_errors_name_the_text_and_what_is_accepted(
    files: dict[str, Path], text: str, options: dict[str, str], expected: str
) -> None:
    text = text.format(root=files["root"])
    options = {key: value.format(root=files["root"]) for key, value in options.items()}
    with pytest.raises(ValueError) as caught:
        parse_backbone(text, **options)
    message = str(caught.value)
    assert expected in message
    assert f"backbone {text!r}:" in message


def test_freeze_directory_without_model_keras_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    old = tmp_path / "Freeze-old"
    old.mkdir()
    shutil.copy(files["freeze"] / "frozen_graph.json", old)
    with pytest.raises(ValueError, match="without model.keras"):
        parse_backbone(str(old))
    with pytest.raises(ValueError, match="part of the tfpipe freeze directory"):
        (old / "saved_model").mkdir()
        (old / "saved_model" / "saved_model.pb").write_bytes(b"")
        parse_backbone(str(old / "saved_model"))


def test_application_table_matches_the_installed_keras(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name builds from keras.applications, every preprocessing module exists, and the cached
    weights file names are the ones Keras asks get_file for (checked on the two cheapest to build)."""
    from keras.src.utils import file_utils

    for app in KERAS_APPLICATIONS:
        assert callable(getattr(keras.applications, app.name)), app.name
        assert callable(getattr(keras.applications, app.preprocess_module).preprocess_input), app.name

    class Asked(Exception):
        pass

    def fake_get_file(fname: str, *args: object, **kwargs: object) -> str:
        assert kwargs.get("cache_subdir") == "models"
        raise Asked(fname)

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    for name in ("MobileNetV3Small", "MobileNetV2"):
        app = keras_application(name)
        with pytest.raises(Asked) as asked:
            getattr(keras.applications, name)(
                include_top=False, weights="imagenet", pooling="avg", input_shape=(app.input_size,) * 2 + (3,)
            )
        assert str(asked.value) == app.notop_weights_file


# ---------------------------------------------------------------------------------------------------
# backbone_digest


def test_digest_is_stable_follows_bytes_and_not_paths(files: dict[str, Path], tmp_path: Path) -> None:
    for kind in ("model", "graph", "freeze"):
        copy = tmp_path / kind / files[kind].name
        copy.parent.mkdir()
        if files[kind].is_dir():
            shutil.copytree(files[kind], copy)
        else:
            shutil.copy(files[kind], copy)
        digest = backbone_digest(parse_backbone(str(copy)))
        assert digest.startswith("sha256:") and len(digest) == 7 + 64
        assert backbone_digest(parse_backbone(str(copy))) == digest
        assert backbone_digest(parse_backbone(str(files[kind]))) == digest, "the path is not part of it"
        changed = copy / "model.keras" if copy.is_dir() else copy
        data = bytearray(changed.read_bytes())
        data[len(data) // 2] ^= 1
        changed.write_bytes(bytes(data))
        assert backbone_digest(parse_backbone(str(copy))) != digest, kind

    model = str(files["model"])
    assert backbone_digest(parse_backbone(model, layer="conv")) != backbone_digest(parse_backbone(model))
    graph = str(files["graph"])
    assert backbone_digest(parse_backbone(graph, output_tensor="pool_3:0")) != backbone_digest(parse_backbone(graph))


def test_keras_digest_covers_weights_and_keras_version(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    imagenet = parse_backbone(f"keras:{APP}")
    not_cached = backbone_digest(imagenet)
    assert backbone_digest(imagenet) == not_cached
    assert backbone_digest(parse_backbone(f"keras:{APP}", weights="none")) != not_cached
    assert backbone_digest(parse_backbone("keras:MobileNetV3Large")) != not_cached

    cached = imagenet.application.imagenet_weights_path()
    assert cached == tmp_path / "keras_home" / "models" / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"imagenet weights, version 1")
    first = backbone_digest(imagenet)
    cached.write_bytes(b"imagenet weights, version 2")
    second = backbone_digest(imagenet)
    assert len({not_cached, first, second}) == 3

    weights_copy = tmp_path / "copy.weights.h5"
    shutil.copy(files["weights"], weights_copy)
    from_file = backbone_digest(parse_backbone(f"keras:{APP}", weights=str(weights_copy)))
    assert from_file == backbone_digest(parse_backbone(f"keras:{APP}", weights=str(files["weights"])))
    weights_copy.write_bytes(weights_copy.read_bytes() + b"\0")
    assert backbone_digest(parse_backbone(f"keras:{APP}", weights=str(weights_copy))) != from_file

    from tasks.features import backbone_digest as digest_module

    monkeypatch.setattr(digest_module, "_keras_version", lambda: "99.0.0")
    assert backbone_digest(imagenet) != second
    assert IMAGENET_NOT_CACHED == "imagenet-not-cached"


def test_parsing_and_digests_import_neither_tensorflow_nor_keras(files: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from models.backbone_spec import parse_backbone\nfrom tasks.features.backbone_digest import backbone_digest\n"
        f"texts = ['keras:InceptionV3', {str(files['model'])!r}, {str(files['graph'])!r}, {str(files['freeze'])!r}]\n"
        "digests = [backbone_digest(parse_backbone(t)) for t in texts]\n"
        f"digests.append(backbone_digest(parse_backbone('keras:{APP}', weights={str(files['weights'])!r})))\n"
        "assert len(set(digests)) == 5, digests\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'h5py'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------
# keras kind


def application_reference(weights: Path, images: np.ndarray) -> np.ndarray:
    """The application itself on the images resized to its size and preprocessed its own way."""
    app = keras_application(APP)
    network = keras.applications.MobileNetV3Small(
        include_top=False, weights=str(weights), pooling="avg", input_shape=(224, 224, 3)
    )
    rgb = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
    resized = tf.image.resize(rgb, (app.input_size, app.input_size), method="bilinear")
    return np.asarray(network(keras.applications.mobilenet_v3.preprocess_input(resized * 255.0), training=False))


@pytest.mark.parametrize("shape", [(32, 32, 3), (20, 28, 1)])
def test_keras_application_features_are_the_applications_own(files: dict[str, Path], shape: tuple) -> None:
    spec = parse_backbone(f"keras:{APP}", weights=str(files["weights"]))
    backbone = load_backbone(spec, shape)
    images = as_float(pixels(3, shape))

    features = np.asarray(backbone(images, training=False))

    assert width_of(backbone) == APP_WIDTH and features.shape == (3, APP_WIDTH)
    assert backbone.inputs[0].name == "image" and backbone.layers[-1].name == FEATURES_NAME
    assert backbone.outputs[0].dtype == "float32"
    np.testing.assert_allclose(features, application_reference(files["weights"], images), rtol=1e-5, atol=1e-5)
    assert not backbone.trainable_weights and backbone.non_trainable_weights
    # training=True changes nothing: the frozen network's BatchNormalization runs in inference mode.
    np.testing.assert_allclose(np.asarray(backbone(images, training=True)), features, rtol=1e-5, atol=1e-6)


def test_random_weights_and_unfreezing_the_top_layers(files: dict[str, Path]) -> None:
    backbone = load_backbone(parse_backbone(f"keras:{APP}", weights="none"), (32, 32, 3), trainable_top_layers=3)
    network = backbone.get_layer("backbone_network")
    weighted = [layer for layer in network.layers if layer.weights]
    trainable = [layer for layer in network.layers if layer.trainable and layer.weights]
    assert trainable and set(trainable) <= set(weighted[-3:])
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert backbone.trainable_weights
    with pytest.raises(ValueError, match="trainable_top_layers"):
        load_backbone(parse_backbone(f"keras:{APP}", weights="none"), (32, 32, 3), trainable_top_layers=-1)


def test_missing_imagenet_weights_offline_say_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keras.src.utils import file_utils

    def offline(fname: str, origin: str, *args: object, **kwargs: object) -> str:
        raise Exception(f"URL fetch failure on {origin}: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(BackboneError) as caught:
        load_backbone(parse_backbone(f"keras:{APP}"), (32, 32, 3))
    message = str(caught.value)
    assert "not in the Keras cache" in message and "URL fetch failure" in message
    assert keras_application(APP).notop_weights_file in message and str(tmp_path / "empty_keras_home") in message


# ---------------------------------------------------------------------------------------------------
# model and freeze kinds


def embedding_reference(model_path: Path, images: np.ndarray, layer: str = FEATURE_LAYER) -> np.ndarray:
    model = keras.models.load_model(model_path, compile=False)
    sub = keras.Model(model.inputs[0], model.get_layer(layer).output)
    out = np.asarray(sub(images, training=False))
    return out.mean(axis=(1, 2)) if out.ndim == 4 else out


def test_model_features_are_the_input_of_the_last_dense_layer(files: dict[str, Path]) -> None:
    backbone = load_backbone(parse_backbone(str(files["model"])), SMALL_SHAPE)
    images = as_float(pixels(4, SMALL_SHAPE))
    features = np.asarray(backbone(images, training=False))
    assert width_of(backbone) == 8 and features.shape == (4, 8)
    np.testing.assert_allclose(features, embedding_reference(files["model"], images), rtol=1e-6, atol=1e-6)
    # The Dropout before `logits` is not part of the backbone: training mode gives the same features.
    np.testing.assert_allclose(np.asarray(backbone(images, training=True)), features, rtol=1e-6, atol=1e-6)
    assert not backbone.trainable_weights


def test_model_features_of_a_named_layer_are_pooled_and_images_adapted(files: dict[str, Path]) -> None:
    shape = (24, 20, 1)
    backbone = load_backbone(parse_backbone(str(files["model"]), layer="conv"), shape)
    images = as_float(pixels(2, shape))
    adapted = tf.image.resize(np.repeat(images, 3, axis=-1), SMALL_SHAPE[:2], method="bilinear").numpy()
    assert width_of(backbone) == 6
    np.testing.assert_allclose(np.asarray(backbone(images)), embedding_reference(files["model"], adapted, "conv"),
                               rtol=1e-5, atol=1e-6)


def test_model_errors_are_named(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="has no layer 'nope'; its layers: image, conv"):
        load_backbone(parse_backbone(str(files["model"]), layer="nope"), SMALL_SHAPE)
    inputs = keras.Input(SMALL_SHAPE, name="image")
    no_dense = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    no_dense.save(tmp_path / "no_dense.keras")
    with pytest.raises(BackboneError, match="has no Dense layer"):
        load_backbone(parse_backbone(str(tmp_path / "no_dense.keras")), SMALL_SHAPE)
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(BackboneError, match="cannot load the Keras model"):
        load_backbone(parse_backbone(str(tmp_path / "broken.keras")), SMALL_SHAPE)


def test_freeze_directory_features_use_its_image_shape(files: dict[str, Path], tmp_path: Path) -> None:
    shape = (32, 24, 3)
    backbone = load_backbone(parse_backbone(str(files["freeze"])), shape)
    images = as_float(pixels(3, shape))
    resized = tf.image.resize(images, SMALL_SHAPE[:2], method="bilinear").numpy()
    assert width_of(backbone) == 8
    np.testing.assert_allclose(np.asarray(backbone(images)), embedding_reference(files["model"], resized),
                               rtol=1e-5, atol=1e-6)

    wrong = tmp_path / "Freeze-wrong"
    shutil.copytree(files["freeze"], wrong)
    info = json.loads((wrong / "frozen_graph.json").read_text())
    (wrong / "frozen_graph.json").write_text(json.dumps({**info, "image_shape": [8, 8, 3]}))
    with pytest.raises(BackboneError, match="frozen_graph.json says"):
        load_backbone(parse_backbone(str(wrong)), shape)


# ---------------------------------------------------------------------------------------------------
# graph kind


@pytest.mark.parametrize("scale", [True, False], ids=["scaled", "not-scaled"])
def test_batch_norm_rewrite_equals_the_ops_definition(scale: bool) -> None:
    rng = np.random.default_rng(1)
    params = random_batch_norm(rng, 5, scale=scale)
    t = rng.normal(0, 2, (2, 3, 4, 5)).astype(np.float32)
    legacy = batch_norm_only_graph_def(params, t.shape, producer=tf.version.GRAPH_DEF_VERSION)
    with pytest.raises(tf.errors.UnimplementedError, match="not available in GraphDef version"):
        run_graph_def(legacy, {"t:0": t}, "bn:0")

    rewritten, count = rewrite_batch_norm_nodes(legacy)

    assert count == 1
    ops = [node.op for node in rewritten.node]
    assert "BatchNormWithGlobalNormalization" not in ops
    assert ops.count("Mul") == (2 if scale else 1) and "Rsqrt" in ops
    result = run_graph_def(rewritten, {"t:0": t}, "bn:0")
    assert result.dtype == np.float32 and result.shape == t.shape
    np.testing.assert_allclose(result, batch_norm_reference(t, params), rtol=1e-6, atol=1e-6)


def test_raw_legacy_graph_fails_through_wrap_function_and_rewritten_one_runs(files: dict[str, Path]) -> None:
    graph_def = inception_like_graph_def(width=GRAPH_WIDTH, producer=3)
    jpeg = tf.io.encode_jpeg(pixels(1, (20, 24, 3))[0]).numpy()

    def imported(encoded: tf.Tensor) -> tf.Tensor:
        return tf.compat.v1.import_graph_def(graph_def, input_map={"DecodeJpeg/contents:0": encoded},
                                             return_elements=["pool_3/_reshape:0"], name="g")[0]

    raw = tf.compat.v1.wrap_function(imported, [tf.TensorSpec([], tf.string)])
    with pytest.raises(tf.errors.UnimplementedError, match="BatchNormWithGlobalNormalization is not available"):
        raw(tf.constant(jpeg))
    function = wrap_frozen_graph(graph_def.SerializeToString(), "DecodeJpeg/contents:0", "pool_3/_reshape:0")
    assert function(tf.constant(jpeg)).shape == (1, GRAPH_WIDTH)


@pytest.mark.parametrize("contents_as_const", [False, True], ids=["placeholder", "const"])
@pytest.mark.parametrize("shape", [(20, 24, 3), (20, 24, 1)])
def test_graph_features_are_the_graphs_own_on_the_same_jpeg_bytes(
    tmp_path: Path, shape: tuple, contents_as_const: bool
) -> None:
    graph_def = inception_like_graph_def(width=GRAPH_WIDTH, contents_as_const=contents_as_const)
    path = write_graph(tmp_path / "graph.pb", graph_def)
    backbone = load_backbone(parse_backbone(str(path)), shape)
    images = pixels(3, shape)

    features = np.asarray(backbone(as_float(images)))

    assert width_of(backbone) == GRAPH_WIDTH and features.shape == (3, GRAPH_WIDTH)
    rewritten, count = rewrite_batch_norm_nodes(graph_def)
    assert count == 2
    for image, feature in zip(images, features, strict=True):
        rgb = np.repeat(image, 3, axis=-1) if shape[2] == 1 else image
        jpeg = tf.io.encode_jpeg(rgb, quality=GRAPH_JPEG_QUALITY).numpy()
        expected = run_graph_def(rewritten, {"DecodeJpeg/contents:0": jpeg}, "pool_3/_reshape:0")
        np.testing.assert_allclose(feature, expected[0], rtol=1e-5, atol=1e-5)
    assert not backbone.trainable_weights and not backbone.non_trainable_weights


def test_graph_errors_are_named(files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no output tensor 'pool_9:0'"):
        load_backbone(parse_backbone(str(files["graph"]), output_tensor="pool_9:0"), (8, 8, 3))
    (tmp_path / "junk.pb").write_bytes(b"\xff\xfe definitely not a protobuf")
    with pytest.raises(BackboneError, match="not a GraphDef"):
        load_backbone(parse_backbone(str(tmp_path / "junk.pb")), (8, 8, 3))
    with pytest.raises(BackboneError, match="no weights to unfreeze"):
        load_backbone(parse_backbone(str(files["graph"])), (8, 8, 3), trainable_top_layers=1)
    unknown = inception_like_graph_def(width=GRAPH_WIDTH)
    unknown.node[-1].op = "NoSuchOpAnywhere"
    with pytest.raises(BackboneError, match="NoSuchOpAnywhere \\(not registered"):
        load_backbone(parse_backbone(str(write_graph(tmp_path / "unknown.pb", unknown))), (8, 8, 3))


# ---------------------------------------------------------------------------------------------------
# backbone + head: one Keras model, saved, reloaded and exported


@pytest.mark.parametrize(
    ("kind", "shape"),
    [("keras", (32, 32, 3)), ("model", (16, 16, 1)), ("freeze", (24, 24, 3)), ("graph", (20, 24, 3))],
)
def test_backbone_with_a_head_saves_loads_and_exports(
    files: dict[str, Path], tmp_path: Path, kind: str, shape: tuple
) -> None:
    if kind == "keras":
        spec = parse_backbone(f"keras:{APP}", weights=str(files["weights"]))
    else:
        spec = parse_backbone(str(files[kind]))
    backbone = load_backbone(spec, shape)
    # The head as the feature cache trains it: a model of its own on (D,) features.
    keras.utils.set_random_seed(3)
    head_input = keras.Input((width_of(backbone),), name="cached_features")
    head = keras.Model(head_input, classification_head(head_input, num_classes=4), name="head")
    model = keras.Model(backbone.inputs[0], head(backbone.outputs[0]), name=f"{kind}_classifier")
    images = pixels(5, shape, seed=7)
    expected = np.asarray(model(as_float(images), training=False))

    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(np.asarray(reloaded(as_float(images), training=False)), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(head(backbone(as_float(images)))), expected, rtol=1e-6, atol=1e-6)

    out_dir = tmp_path / "frozen"
    export_serving_model(reloaded, out_dir, image_shape=shape, class_names=list("abcd"))
    max_diff = verify_exported(out_dir, reloaded, [png(image) for image in images], image_shape=shape)
    assert max_diff <= 1e-5

    # The saved backbone + head is itself a backbone: by default its features are the head's input.
    again = load_backbone(parse_backbone(str(tmp_path / "model.keras")), shape)
    np.testing.assert_allclose(np.asarray(again(as_float(images))), np.asarray(backbone(as_float(images))),
                               rtol=1e-6, atol=1e-6)


def test_features_inside_a_nested_head_with_a_hidden_layer(files: dict[str, Path], tmp_path: Path) -> None:
    """When the last Dense is inside a nested model past its input, the features are taken there."""
    backbone = load_backbone(parse_backbone(str(files["model"])), SMALL_SHAPE)
    head_input = keras.Input((width_of(backbone),))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(head_input)
    head = keras.Model(head_input, keras.layers.Dense(3, activation="softmax")(hidden), name="head")
    inputs = keras.Input(SMALL_SHAPE, name="image")
    keras.Model(inputs, head(backbone(inputs))).save(tmp_path / "nested.keras")

    features = load_backbone(parse_backbone(str(tmp_path / "nested.keras")), SMALL_SHAPE)

    images = as_float(pixels(2, SMALL_SHAPE))
    expected = np.asarray(keras.Model(head_input, hidden)(backbone(images)))
    assert width_of(features) == 5
    np.testing.assert_allclose(np.asarray(features(images)), expected, rtol=1e-6, atol=1e-6)


def test_a_composed_model_exports_the_same_bytes_from_fresh_processes(files: dict[str, Path], tmp_path: Path) -> None:
    """Freeze exports in a process of its own, which never imported ``models.backbones`` (nor may an Evaluate
    rerun alone): a model composed with a graph backbone must load there, and two exports give the same bytes."""
    shape = (20, 24, 3)
    backbone = load_backbone(parse_backbone(str(files["graph"])), shape)
    head_input = keras.Input((width_of(backbone),))
    head = keras.Model(head_input, classification_head(head_input, num_classes=3, dropout=0.5), name="head")
    model = keras.Model(backbone.inputs[0], head(backbone.outputs[0]))
    model.save(tmp_path / "model.keras")

    exports = []
    for name in ("first", "second"):
        job = ExportJob(model_file=tmp_path / "model.keras", out_dir=tmp_path / name, image_shape=shape,
                        class_names=("a", "b", "c"), top_k=2)
        run_in_fresh_process(export_model_file, job)
        exports.append(job.out_dir)

    # frozen_graph.pb is left out: TensorFlow's control-flow lowering adds a varying number of placeholders.
    for rel in ("saved_model/saved_model.pb", "saved_model/variables/variables.data-00000-of-00001",
                "saved_model/variables/variables.index", "frozen_graph.json", "labels.txt"):
        assert (exports[0] / rel).read_bytes() == (exports[1] / rel).read_bytes(), rel
    images = pixels(4, shape, seed=2)
    assert verify_exported(exports[0], model, [png(image) for image in images], image_shape=shape) <= 1e-5
