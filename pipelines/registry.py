"""The dataset registry: one entry per dataset, from which everything dataset-specific is derived.

An entry names its decode task, its official sources (URLs with pinned checksums), its default model,
image size and augmentation. The CLI's choices, the ``luigi --module pipelines.<name>`` wrapper tasks,
``tfpipe status`` and the README's dataset table come from here. Adding a dataset is: a codec, a decode
task, one ``register(Dataset(...))``.

Importing this module imports every task class (none of them imports TensorFlow at module level), so
Luigi's own command line knows them all: ``luigi --module pipelines.mnist Mnist --Train-epochs 3``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import luigi

from tasks.datasets.captcha.task import DecodeCaptcha, GenerateCaptchas
from tasks.datasets.cifar.task import DecodeCifar
from tasks.datasets.hwdb.task import DecodeHwdb
from tasks.datasets.images.task import DecodeImages
from tasks.datasets.mnist.task import DecodeMnist, idx_file_names
from tasks.sources.task import Download, is_remote
from tasks.store.task import ArtifactTask
from tasks.training.budget import BALANCE_RULE, BUDGET_RULE

# The role under which a user's ``--source`` reaches the decode stage.
USER_SOURCE = "data"


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
        """The defaults Train receives (and keys on): model, augmentation, training defaults and budget rule."""
        return {"model": self.model, **self.augmentation_defaults(), **dataclasses.asdict(self.training),
                "budget_rule": BUDGET_RULE, "balance_rule": BALANCE_RULE}

    def source_tasks(self, source: str = "", checksum: str = "") -> dict[str, luigi.Task]:
        """The tasks that bring the raw data, by role: the user's ``source``, the generator, or the official
        files. ``checksum`` pins a single source (``sha256:<hex>``) or names roles (``train=sha256:<hex>,...``).
        """
        pins = parse_checksums(checksum)
        if source:
            unknown = sorted(set(pins) - {"", USER_SOURCE})
            if unknown:
                raise ValueError(f"--checksum names {', '.join(unknown)}, but --source is a single source")
            return {USER_SOURCE: Download(source=source, checksum=pins.get("", pins.get(USER_SOURCE, "")))}
        if self.generator is not None:
            if pins:
                raise ValueError(f"{self.name}: --checksum needs --source (the default data is generated)")
            return {USER_SOURCE: self.generator()}
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


DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    """Add (or replace) a registry entry; the CLI and wrapper tasks pick it up from here."""
    DATASETS[dataset.name] = dataset
    return dataset


def unregister(name: str) -> None:
    DATASETS.pop(name, None)


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None


# Pins: CIFAR's md5 as published by its authors; MNIST, Fashion-MNIST and flower_photos sha256 and sizes as in
# tensorflow/datasets (tensorflow_datasets/url_checksums/{mnist,fashion_mnist,tf_flowers}.txt).
CIFAR_AUGMENTATION = Augmentation(flip_left_right=True, brightness=0.1, contrast=0.2, translate=0.125)
CIFAR_TRAINING = Training(batch_size=128, target_steps=12_000, min_epochs=10, max_epochs=120)
DIGIT_AUGMENTATION = Augmentation(translate=0.1)
MNIST_BASE = "https://storage.googleapis.com/cvdf-datasets/mnist/"
FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
HWDB_BASE = "http://www.nlpr.ia.ac.cn/databases/download/feature_data/"

register(Dataset(
    name="captcha", title="4-letter captchas (A-Z) drawn by the `captcha` package; no network needed",
    decode=DecodeCaptcha, generator=GenerateCaptchas, model="captcha_cnn", image_size="160x60x1",
    metric="sequence_accuracy",
    training=Training(learning_rate=2e-3, target_steps=3000, min_epochs=8, max_epochs=40),
    # Small shifts keep the letters and their order: the model learns letters, not where this generator puts them.
    augmentation=Augmentation(translate=0.05),
    source_help="a folder with labels.csv (index,label) and <index>.png files",
))
register(Dataset(
    name="cifar10", title="CIFAR-10, the official python pickle archive", decode=DecodeCifar,
    model="resnet_cifar", image_size="32x32x3", augmentation=CIFAR_AUGMENTATION,
    training=CIFAR_TRAINING,
    sources=(Source(USER_SOURCE, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "md5:c58f30108f718f92721af3b95e74349a", 170498071),),
    decode_params={"variant": "cifar10"},
    source_help="cifar-10-python.tar.gz, or the folder it extracts to",
))
register(Dataset(
    name="cifar100", title="CIFAR-100 (fine or coarse labels), the official python pickle archive",
    decode=DecodeCifar, model="resnet_cifar", image_size="32x32x3", augmentation=CIFAR_AUGMENTATION,
    training=CIFAR_TRAINING,
    sources=(Source(USER_SOURCE, "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                    "md5:eb9058c3a382ffc7106e4002c42a8d85", 169001437),),
    decode_params={"variant": "cifar100"},
    source_help="cifar-100-python.tar.gz, or the folder it extracts to",
))
register(Dataset(
    name="hwdb", title="CASIA HWDB1.1 handwritten Chinese characters (`.gnt`, 3755 classes)",
    decode=DecodeHwdb, model="hwdb_cnn", training=Training(batch_size=128, target_steps=20_000, min_epochs=3),
    # No checksum is published for these archives: the user pins the files they trust.
    sources=(Source("train", HWDB_BASE + "HWDB1.1trn_gnt.zip"), Source("test", HWDB_BASE + "HWDB1.1tst_gnt.zip")),
    source_help="a folder (or archive) holding the train and test folders of .gnt files",
))


def idx_sources(base_url: str, pins: dict[str, tuple[str, int]]) -> tuple[Source, ...]:
    """The four official IDX files under ``base_url`` (their usual gzip names), from ``role: (sha256, bytes)``."""
    return tuple(Source(role, base_url + idx_file_names(role)[0], f"sha256:{digest}", size)
                 for role, (digest, size) in pins.items())


register(Dataset(
    name="mnist", title="MNIST handwritten digits (IDX files)", decode=DecodeMnist, model="small_cnn",
    image_size="28x28x1", decode_params={"variant": "mnist"}, augmentation=DIGIT_AUGMENTATION,
    sources=idx_sources(MNIST_BASE, {
        "train_images": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train_labels": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "test_images": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "test_labels": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    }),
    source_help="a folder holding the four IDX files (gzip or plain)",
))
register(Dataset(
    name="fashion_mnist", title="Fashion-MNIST clothing images (IDX files)", decode=DecodeMnist,
    model="small_cnn", image_size="28x28x1", decode_params={"variant": "fashion_mnist"},
    augmentation=Augmentation(flip_left_right=True, translate=0.1),
    sources=idx_sources(FASHION_BASE, {
        "train_images": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train_labels": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "test_images": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "test_labels": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    }),
    source_help="a folder holding the four IDX files (gzip or plain)",
))
register(Dataset(
    name="images", title="any class-per-folder image directory (flower_photos style); default: flower_photos",
    decode=DecodeImages, model="small_cnn",
    # A folder may hold digits or letters as well as photos: no mirror images by default.
    augmentation=Augmentation(brightness=0.1, contrast=0.1, translate=0.1),
    training=Training(target_steps=2000, min_epochs=10, max_epochs=30),
    sources=(Source(USER_SOURCE, "https://storage.googleapis.com/download.tensorflow.org/example_images/"
                                 "flower_photos.tgz",
                    "sha256:4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c", 228813984),),
    source_help="a folder of <class>/<image> files, a .tar/.tgz/.zip of one, or a URL (with --checksum)",
))


def dataset_table() -> str:
    """The README's dataset table, made from the registry (``python -m pipelines.registry`` prints it)."""
    rows = ["| pipeline | data | default model | images | training defaults | official source |",
            "|---|---|---|---|---|---|"]
    for entry in DATASETS.values():
        if entry.generator is not None:
            origin = f"generated by `{entry.generator.get_task_family()}`"
        elif all(src.checksum for src in entry.sources):
            origin = f"{len(entry.sources)} file(s), pinned " + "/".join(
                sorted({src.checksum.split(":")[0] for src in entry.sources}))
        else:
            origin = f"{len(entry.sources)} file(s), no published checksum: pin with `--checksum ROLE=sha256:<hex>`"
        rows.append(f"| `{entry.name}` | {entry.title} | `{entry.model}` | {entry.image_size_text()} | "
                    f"{entry.training.summary()} | {origin} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(dataset_table())
