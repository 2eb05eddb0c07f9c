"""The digest that keys a backbone's features: everything that decides what ``spec`` computes, no TensorFlow.

``tfpipe status`` computes it for every bottleneck stage, so it reads file contents through the stat-cached
``fingerprint_path`` and imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from models.backbone_spec import LOADER_VERSION, WEIGHTS_IMAGENET, WEIGHTS_NONE, BackboneSpec
from tasks.sources.fingerprint import fingerprint_path

IMAGENET_NOT_CACHED = "imagenet-not-cached"
_DIGEST_SCHEMA = "tfpipe-backbone-digest-v1"


def backbone_digest(spec: BackboneSpec, *, cache_file: Path | None = None) -> str:
    """``sha256:<hex>`` over canonical JSON of everything that decides the features ``spec`` computes.

    Always: a schema tag, `LOADER_VERSION` and the kind. Then, per kind:

    - keras: the application name, its input size and preprocessing module (from `KERAS_APPLICATIONS`),
      the weights kind (``imagenet``/``none``/``file``) and the weights' content: for a file its
      ``fingerprint_path`` digest, for ``imagenet`` the digest of the file in the Keras cache
      (``<keras home>/models/<notop file>``) or the string ``"imagenet-not-cached"`` when it is not there
      yet (it would be downloaded; the digest moves once it is cached), and the installed Keras version
      (``importlib.metadata``; the architecture is Keras code).
    - model, freeze: the content digest of the file / directory (``fingerprint_path``: every byte of every
      file, names, symlink targets; not the path itself) and ``layer``. Not ``input_range``: the range the
      network is fed is preprocessing, keyed with the range actually fed (detected or given) in the feature
      cache's namespace (``tasks/features/task.py``), so the features of every other range stay cached.
    - graph: the content digest of the ``.pb`` and both tensor names.

    ``cache_file`` is the stat cache of ``fingerprint_path`` (``stat_cache_path(artifact_root)``); with it
    an unchanged file costs a ``stat``. Imports neither TensorFlow nor Keras.
    """
    payload: dict[str, Any] = {"schema": _DIGEST_SCHEMA, "loader_version": LOADER_VERSION, "kind": spec.kind}
    if spec.kind == "keras":
        app = spec.application
        payload.update(
            application=app.name,
            input_size=app.input_size,
            preprocess_module=app.preprocess_module,
            keras_version=_keras_version(),
        )
        if spec.weights == WEIGHTS_NONE:
            payload.update(weights="none", weights_digest=None)
        elif spec.weights == WEIGHTS_IMAGENET:
            cached = app.imagenet_weights_path()
            digest = fingerprint_path(cached, cache_file=cache_file) if cached.is_file() else IMAGENET_NOT_CACHED
            payload.update(weights="imagenet", weights_digest=digest)
        else:
            payload.update(weights="file", weights_digest=fingerprint_path(Path(spec.weights), cache_file=cache_file))
    else:
        payload["content"] = fingerprint_path(Path(spec.target), cache_file=cache_file)
        if spec.kind == "graph":
            payload.update(input_tensor=spec.input_tensor, output_tensor=spec.output_tensor)
        else:
            payload["layer"] = spec.layer
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(text.encode("ascii")).hexdigest()


def _keras_version() -> str:
    try:
        return importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"
