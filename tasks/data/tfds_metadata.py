"""TFDS's description of a folder of TFRecord shards, so ``tfds.builder_from_directory(folder)`` loads it.

Plain Python (no TensorFlow, no tensorflow-datasets): the JSON TFDS's own writer produces
(``tfds.folder_dataset.write_metadata``), written by hand; tests/data/test_tfds_metadata.py loads the result
through TFDS and compares every example with tfpipe's reader. Three files:

- ``dataset_info.json``: TFDS's DatasetInfo proto as JSON: name (the dataset), version, file format ``tfrecord``,
  and per split the shard file template and each shard's example count, read from the shards themselves.
- ``features.json``: a FeaturesDict mirroring the records' slim keys, nested at ``/`` as TFDS nests them, so an
  example is ``ex["image"]["encoded"]``, ``ex["image"]["class"]["label"]``... (README, "Loading the shards with
  TFDS"). ``image/encoded`` is a uint8 Tensor of the recorded (height, width, channels) stored as raw bytes, or
  an Image (PNG) of that shape; ``image/class/label`` a ClassLabel, or for a multi-head dataset (captcha) a
  Sequence of ``num_heads`` ClassLabels over the same classes; format, key and content hash are Text; height,
  width and channels int64 scalars.
- the ClassLabel's names, one a line, in the order of ``labels.txt``.

An empty split (which tfpipe refuses to train or evaluate on) is described with its one empty shard; TFDS lists it
but refuses to read it ("corresponds to no data").
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.data.files import TFDS_FEATURES_FILE, TFDS_LABEL_NAMES_FILE
from tasks.formats.dataset_info import DATASET_INFO_JSON, DatasetInfo, SplitInfo
from tasks.formats.errors import FormatError
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import shard_names

# The version TFDS reports for tfpipe's records; raise it when the features below change.
TFDS_VERSION = "1.0.0"
FILE_FORMAT = "tfrecord"
FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # TFDS's default: tfpipe's shard names
_FRAMING_BYTES = 16  # a TFRecord's length (8), its CRC (4) and the data's CRC (4) around each record

_FEATURES = "tensorflow_datasets.core.features."
_FEATURES_DICT = _FEATURES + "features_dict.FeaturesDict"
_TENSOR = _FEATURES + "tensor_feature.Tensor"
_SCALAR = _FEATURES + "scalar.Scalar"
_TEXT = _FEATURES + "text_feature.Text"
_IMAGE = _FEATURES + "image_feature.Image"
_CLASS_LABEL = _FEATURES + "class_label_feature.ClassLabel"
_SEQUENCE = _FEATURES + "sequence_feature.Sequence"


def write_tfds_metadata(out_dir: Path, info: DatasetInfo, class_names: Sequence[str]) -> None:
    """Write TFDS's ``dataset_info.json``, ``features.json`` and class-name file into ``out_dir``, which holds
    ``info``'s splits as TFDS-named shards (tasks/data/shards.py ``write_split_shards``); ``class_names`` are
    those of its ``labels.txt``. Each shard's example count is read from the shard. Files of those names already
    there are replaced, never written through."""
    out_dir = Path(out_dir)
    check_class_names(class_names, info.num_classes, out_dir / LABELS_FILE)
    features = features_json(info)
    splits = [split_entry(out_dir, info.dataset, name, split) for name, split in info.splits.items()]
    _replace_text(out_dir / DATASET_INFO_JSON, _json_text(dataset_info_json(info, splits)))
    _replace_text(out_dir / TFDS_FEATURES_FILE, _json_text(features))
    _replace_text(out_dir / TFDS_LABEL_NAMES_FILE, "".join(f"{name}\n" for name in class_names))


def check_class_names(class_names: Sequence[str], num_classes: int, source: Path) -> None:
    """TFDS reads the names back one a line, stripped, empty lines dropped, and needs them distinct: refuse names
    (from ``source``, named in the error) that would not come back as they are."""
    if len(class_names) != num_classes:
        raise FormatError(f"{len(class_names)} class names for {num_classes} classes", path=source)
    for name in class_names:
        if not name or name != name.strip() or "\n" in name or "\r" in name:
            raise FormatError(f"class name {name!r} cannot be a TFDS ClassLabel name (empty, or blank at an end)",
                              path=source)
    if len(set(class_names)) != len(class_names):
        raise FormatError("class names repeat; TFDS's ClassLabel needs distinct names", path=source)


def split_entry(out_dir: Path, dataset: str, name: str, split: SplitInfo) -> dict[str, Any]:
    """One split of TFDS's DatasetInfo: its shards' example counts and serialized bytes, read from the shards."""
    expected = shard_names(dataset, name, len(split.files))
    if list(split.files) != expected or not expected:
        raise FormatError(f"split {name!r}: shards {list(split.files)[:2]} are not TFDS-named like "
                          f"{shard_names(dataset, name, 1)}", path=out_dir)
    lengths, num_bytes = [], 0
    for file_name in split.files:
        records, payload = count_records(out_dir / file_name)
        lengths.append(records)
        num_bytes += payload
    if sum(lengths) != split.count:
        raise FormatError(f"split {name!r} has {sum(lengths)} records in its shards, its description says "
                          f"{split.count}", path=out_dir)
    return {"name": name, "filepathTemplate": FILEPATH_TEMPLATE, "numBytes": str(num_bytes),
            "shardLengths": [str(n) for n in lengths]}


def count_records(path: Path) -> tuple[int, int]:
    """(records, bytes of their data) of a TFRecord file, from its length fields alone (the CRCs are the reader's
    and the manifest's to check)."""
    size = os.path.getsize(path)
    records = payload = offset = 0
    with open(path, "rb") as handle:
        while offset < size:
            header = handle.read(8)
            if len(header) < 8:
                raise FormatError("truncated record header", path=path, offset=offset)
            (length,) = struct.unpack("<Q", header)
            if offset + _FRAMING_BYTES + length > size:
                raise FormatError(f"truncated record: length field {length} runs past the end of the file",
                                  path=path, offset=offset)
            offset += _FRAMING_BYTES + length
            handle.seek(offset)
            records += 1
            payload += length
    return records, payload


def dataset_info_json(info: DatasetInfo, splits: list[dict[str, Any]]) -> dict[str, Any]:
    height, width, channels = info.image_shape
    heads = f", {info.num_heads} labels each" if info.num_heads > 1 else ""
    description = (f"tfpipe's TFRecord shards of {info.dataset}: {height}x{width}x{channels} uint8 images "
                   f"({info.image_format}), {info.num_classes} classes{heads}.")
    return {"name": info.dataset, "version": TFDS_VERSION, "description": description, "fileFormat": FILE_FORMAT,
            "splits": splits}


def features_json(info: DatasetInfo) -> dict[str, Any]:
    """TFDS's FeaturesDict of tfpipe's records (``features.json``), nested at each ``/`` of the slim keys."""
    class_label = {"pythonClassName": _CLASS_LABEL, "classLabel": {"numClasses": str(info.num_classes)}}
    label = class_label if info.num_heads == 1 else {
        "pythonClassName": _SEQUENCE, "sequence": {"feature": class_label, "length": str(info.num_heads)}}
    image = {
        "encoded": image_feature(info.image_shape, info.image_format),
        "format": _text(),
        "height": _scalar_int64(),
        "width": _scalar_int64(),
        "channels": _scalar_int64(),
        "class": _features_dict({"label": label}),
        "key": _text(),
        "sha256": _text(),
    }
    return _features_dict({"image": _features_dict(image)})


def image_feature(shape: tuple[int, int, int], image_format: str) -> dict[str, Any]:
    """``image/encoded``: raw uint8 HWC bytes (a Tensor TFDS decodes with ``decode_raw``) or a PNG (an Image)."""
    dimensions = {"dimensions": [str(d) for d in shape]}
    if image_format == "raw":
        return {"pythonClassName": _TENSOR, "tensor": {"dtype": "uint8", "encoding": "bytes", "shape": dimensions}}
    if image_format == "png":
        return {"pythonClassName": _IMAGE, "image": {"dtype": "uint8", "encodingFormat": "png", "shape": dimensions}}
    raise ValueError(f"no TFDS feature for image format {image_format!r}")


def _features_dict(features: dict[str, Any]) -> dict[str, Any]:
    return {"pythonClassName": _FEATURES_DICT, "featuresDict": {"features": features}}


def _text() -> dict[str, Any]:
    return {"pythonClassName": _TEXT, "text": {}}


def _scalar_int64() -> dict[str, Any]:
    return {"pythonClassName": _SCALAR, "tensor": {"dtype": "int64", "encoding": "none", "shape": {}}}


def _json_text(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _replace_text(path: Path, text: str) -> None:
    """Write ``path`` as a new file: one already there may be a hard link into another artifact (a stage handing
    on its upstream's files), which must not be written through."""
    path.unlink(missing_ok=True)
    path.write_text(text, encoding="utf-8")
