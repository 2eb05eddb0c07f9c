"""``dataset_info.json``: the one typed description of a dataset artifact's examples. No Luigi.

Decode, image-dirs, TFRecord and bottleneck artifacts all carry it: image shape, classes, heads, and per split the
example count (plus, for TFRecords, the shard files; for image dirs, the decoded split it came from). Decode,
image-dirs and bottleneck artifacts keep it as ``dataset_info.json``; an examples artifact (TFRecord shards) keeps
it under a name of its own (tasks/data/files.py), since TFDS reads its own description from ``dataset_info.json``
there (tasks/data/tfds_metadata.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tasks.formats.errors import FormatError

# Decode, image-dirs, bottleneck: image shape, classes, heads, per split the count. In a shard folder TFDS's
# DatasetInfo proto JSON has this name.
DATASET_INFO_JSON = "dataset_info.json"
FOLDER_STYLES = ("name", "index")


@dataclass(frozen=True)
class SplitInfo:
    count: int
    files: tuple[str, ...] = ()  # TFRecord shards of the split, in order
    source: str = ""  # image dirs: the decoded split whose rows it holds


@dataclass(frozen=True)
class DatasetInfo:
    dataset: str
    image_shape: tuple[int, int, int]
    num_classes: int
    num_heads: int = 1
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    # Class folders of the image-dirs stage: "name" (``airplane/``) or "index" (``00042/``, for HWDB's
    # thousands of characters).
    folder_style: str = "name"
    # How TFRecords store ``image/encoded`` ("raw" uint8 HWC or "png"); decoded arrays are always raw.
    image_format: str = "raw"

    def __post_init__(self) -> None:
        if self.folder_style not in FOLDER_STYLES:
            raise ValueError(f"folder_style must be one of {FOLDER_STYLES}, got {self.folder_style!r}")

    def count(self, split: str) -> int:
        return self.split(split).count

    def split(self, split: str) -> SplitInfo:
        try:
            return self.splits[split]
        except KeyError:
            raise ValueError(f"{self.dataset}: no split {split!r}; splits: {', '.join(self.splits)}") from None

    def with_splits(self, splits: dict[str, SplitInfo], **changes: Any) -> DatasetInfo:
        return replace(self, splits=dict(splits), **changes)

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["image_shape"] = list(self.image_shape)
        raw["splits"] = {name: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()}
                         for name, s in self.splits.items()}
        return raw

    def save(self, directory: Path, file_name: str = DATASET_INFO_JSON) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False)
        (Path(directory) / file_name).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, file_name: str = DATASET_INFO_JSON) -> DatasetInfo:
        """The description in ``directory/file_name``; an examples artifact's: tasks/data/shards.py
        ``load_dataset_info``."""
        path = Path(directory) / file_name
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            splits = {name: SplitInfo(int(s["count"]), tuple(s.get("files", ())), s.get("source", ""))
                      for name, s in raw.pop("splits").items()}
            return cls(splits=splits, image_shape=tuple(raw.pop("image_shape")), **raw)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise FormatError(f"unreadable dataset description ({error})", path=path) from error
