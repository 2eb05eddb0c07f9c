"""``tfpipe predict MODEL IMAGE...``: top-k labels from a frozen model (a freeze artifact, a published version or
``published/<name>``, its version in service), in a local folder or on a bucket root (``s3://bucket/prefix/
published/<name>``...: fetched into this host's cache first, tasks/export/fetch_model.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.commands.common import Subparsers
from tasks.export.files import CURRENT_LINK, LABELS_FILE, SAVED_MODEL_FILE

NAME = "predict"
# The exit status when an image cannot be read (whether or not the others were predicted).
BAD_IMAGES_EXIT_CODE = 2


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="top-k labels from a frozen model")
    parser.add_argument("model_dir", help="a freeze artifact, a published version or published/<name>: a folder, "
                                          "or its s3://bucket/prefix/... URL")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip-bad", action="store_true",
                        help="predict the readable images and report the others (exit status still 2)")


def run(args: argparse.Namespace) -> int:
    from tasks.export.predict import format_predictions, load_predictor

    model_dir = frozen_model_dir(local_model(args.model_dir))
    predictor = load_predictor(model_dir)
    good, bad = predictor.check_images([Path(p) for p in args.images], batch_size=args.batch_size)
    for item in bad:
        print(f"tfpipe: {item.path}: {item.reason}", file=sys.stderr)
    if bad and not args.skip_bad:
        print(f"tfpipe: {len(bad)} of {len(args.images)} image(s) unreadable; nothing predicted "
              "(--skip-bad predicts the others)", file=sys.stderr)
        return BAD_IMAGES_EXIT_CODE
    if good:
        print(format_predictions(predictor.predict_encoded(good, batch_size=args.batch_size)))
    return BAD_IMAGES_EXIT_CODE if bad else 0


def local_model(model: str) -> Path:
    """The folder ``model`` names, or, for a URL, this host's verified copy of that model (in the cache of
    ``[ArtifactStore]``)."""
    from tasks.export.fetch_model import fetch_model, is_url

    if not is_url(model):
        return Path(model)
    from tasks.store.task import ArtifactStore

    config = ArtifactStore()
    return fetch_model(model, config.cache, config.cache_max_gb)


def frozen_model_dir(model_dir: Path) -> Path:
    """The frozen model the user named: a freeze artifact, a published version, or a published name's
    ``current`` version."""
    if (model_dir / CURRENT_LINK).is_dir() and not (model_dir / SAVED_MODEL_FILE).exists():
        model_dir = model_dir / CURRENT_LINK  # published/<name>/: the version in service
    if not (model_dir / LABELS_FILE).is_file():
        raise ValueError(f"{model_dir}: not a frozen tfpipe model (no {LABELS_FILE}); give a freeze artifact "
                         "directory, a published version or published/<name>")
    return model_dir
