"""What a dataset is, for the pipeline: its decode task, official sources, default model, image size,
augmentation and training defaults. Each dataset's folder declares its entries (``entry.py``), and
``pipelines/registry.py`` collects them; everything dataset-specific is derived from an entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.sources.task import RAW_DATA, Download, is_remote
from tasks.store.task import ArtifactTask


@dataclass(frozen=True)
class Source:
    """One official file of a dataset: its role for the decode stage, URL and pinned digest."""

    role: str
    url: str
    checksum: str = ""  # "sha256:<hex>" or "md5:<hex>"; "" = none is published, the user must pin it
    size: int = 0  # bytes, as published (documentation; the checksum is what is verified)


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation a dataset trains with by default (``Train.augment`` turns it off).

    ``translate`` shifts each image by up to that share of its side (class-preserving for every dataset
    here); ``flip_left_right`` only where a mirror image keeps its class (photos, clothing; not digits or
    characters).
    """

    flip_left_right: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    translate: float = 0.0


@dataclass(frozen=True)
class Training:
    """A dataset's training defaults: what ``Train.epochs``, ``Train.batch_size`` and ``Train.learning_rate``
    mean when the user does not set them, and the budget rule that sizes the run to the data.

    The budget rule (``tasks/training/budget.py``) takes the epochs that give at least ``target_steps`` optimizer
    steps, no fewer than ``min_epochs`` and no more than ``max_epochs``: small data gets the many passes it
    needs for its weights (and batch-norm statistics) to settle, large data a few. The learning rate warms up
    linearly over ``warmup_fraction`` of the steps, then follows a cosine to zero; early stopping on the
    validation loss (``patience`` epochs) restores the best weights.
    """

    batch_size: int = 64
    learning_rate: float = 1e-3
    target_steps: int = 3000
    min_epochs: int = 5
    max_epochs: int = 60
    warmup_fraction: float = 0.05
    patience: int = 10

    def summary(self) -> str:
        """One line for the README's dataset table."""
        return (f"batch {self.batch_size}, lr {self.learning_rate:g}, {self.min_epochs}-{self.max_epochs} epochs "
                f"(>= {self.target_steps:,} steps)")


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    decode: type[ArtifactTask]
    model: str
    image_size: str = ""  # fixed by the format, e.g. "32x32x3"; "" = the decode task's image_size parameter
    sources: tuple[Source, ...] = ()
    augmentation: Augmentation = Augmentation()
    training: Training = Training()
    # Made locally when no --source is given (captchas), instead of downloading ``sources``.
    generator: type[ArtifactTask] | None = None
    # Dataset-specific parameter values of the decode task (CIFAR's variant, ...): part of its key.
    decode_params: Mapping[str, Any] = field(default_factory=dict)
    source_help: str = ""  # what --source may be
    metric: str = "top1_accuracy"  # the evaluation metric the publish gate compares (metrics.json key)

    def image_size_text(self) -> str:
        if self.image_size:
            return self.image_size
        params = dict(self.decode.get_params())
        side = params["image_size"]._default
        channels = params["channels"]._default if "channels" in params else "1"
        return f"{side}x{side}x{channels} (`{self.decode.get_task_family()}.image_size`)"

    def augmentation_defaults(self) -> dict[str, Any]:
        """The augmentation a bottleneck stage's views use (and key on)."""
        return dataclasses.asdict(self.augmentation)

    def train_defaults(self) -> dict[str, Any]:
        """The dataset's part of what Train receives (and keys on): model, augmentation and training defaults.
        The pipeline adds the names of the budget rules (``pipelines/stages.py``)."""
        return {"model": self.model, **self.augmentation_defaults(), **dataclasses.asdict(self.training)}

    def source_tasks(self, source: str = "", checksum: str = "") -> dict[str, ArtifactTask]:
        """The tasks that bring the raw data, by role: the user's ``source``, the generator, or the official
        files. ``checksum`` pins a single source (``sha256:<hex>``) or names roles (``train=sha256:<hex>,...``).
        """
        pins = parse_checksums(checksum)
        if source:
            unknown = sorted(set(pins) - {"", RAW_DATA})
            if unknown:
                raise ValueError(f"--checksum names {', '.join(unknown)}, but --source is a single source")
            return {RAW_DATA: Download(source=source, checksum=pins.get("", pins.get(RAW_DATA, "")))}
        if self.generator is not None:
            if pins:
                raise ValueError(f"{self.name}: --checksum needs --source (the default data is generated)")
            return {RAW_DATA: self.generator()}
        return {src.role: self._official_download(src, pins) for src in self._checked_roles(pins)}

    def _checked_roles(self, pins: dict[str, str]) -> tuple[Source, ...]:
        roles = {src.role for src in self.sources}
        if "" in pins:
            if len(self.sources) != 1:
                raise ValueError(f"{self.name} has {len(roles)} sources; pin each by role: "
                                 + ", ".join(f"--checksum {role}=sha256:<hex>" for role in sorted(roles)))
            pins[self.sources[0].role] = pins.pop("")
        unknown = sorted(set(pins) - roles)
        if unknown:
            raise ValueError(f"{self.name}: no source named {', '.join(unknown)}; "
                             f"its sources: {', '.join(sorted(roles))}")
        return self.sources

    def _official_download(self, src: Source, pins: dict[str, str]) -> Download:
        checksum = pins.get(src.role) or src.checksum
        if not checksum and is_remote(src.url):
            flag = "--checksum sha256:<hex>" if len(self.sources) == 1 else f"--checksum {src.role}=sha256:<hex>"
            raise ValueError(f"{self.name}: no checksum is published for {src.url}; pin the file you trust "
                             f"with {flag} (its sha256sum), or use --source with a local copy")
        return Download(source=src.url, checksum=checksum)


def parse_checksums(text: str) -> dict[str, str]:
    """``"sha256:ab.."`` -> ``{"": "sha256:ab.."}``; ``"train=sha256:..,test=md5:.."`` -> by role."""
    pins: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        role, sep, digest = part.rpartition("=")
        role = role.strip() if sep else ""
        if role in pins:
            raise ValueError(f"--checksum pins {role or 'the source'} twice")
        pins[role] = digest.strip()
    return pins
