"""Which decode task and which defaults belong to each dataset name. Tasks import this; codecs don't."""

from __future__ import annotations

from dataclasses import dataclass

import luigi

from tasks.base import ArtifactTask


class DatasetChain:
    """The parameters passed down a pipeline so every stage can build its upstream task.

    ``source`` and ``checksum`` stay out of artifact keys: the Download/Decode key covers them.
    """

    dataset = luigi.Parameter(description="cifar10, cifar100, captcha, hwdb")
    source = luigi.Parameter(default="", description="URL or path of the raw data ('' = the default)")
    checksum = luigi.Parameter(default="", description="sha256:<hex> or md5:<hex> of the source")

    def chain(self) -> dict[str, str]:
        return {"dataset": self.dataset, "source": self.source, "checksum": self.checksum}


@dataclass(frozen=True)
class DatasetDefaults:
    model: str
    flip_left_right: bool
    brightness: float
    contrast: float


DEFAULTS = {
    "cifar10": DatasetDefaults("resnet_cifar", True, 0.1, 0.2),
    "cifar100": DatasetDefaults("resnet_cifar", True, 0.1, 0.2),
    "captcha": DatasetDefaults("captcha_cnn", False, 0.0, 0.0),
    "hwdb": DatasetDefaults("hwdb_cnn", False, 0.0, 0.0),
}


def dataset_defaults(dataset: str) -> DatasetDefaults:
    try:
        return DEFAULTS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DEFAULTS)}") from None


def decode_task(dataset: str, source: str, checksum: str) -> ArtifactTask:
    """The decode stage of a dataset (imports lazily so each dataset's code loads only when used)."""
    if dataset in ("cifar10", "cifar100"):
        from tasks.decode_cifar import DecodeCifar

        return DecodeCifar(dataset=dataset, source=source, checksum=checksum)
    if dataset == "captcha":
        from tasks.captcha import DecodeCaptcha

        return DecodeCaptcha(dataset=dataset, source=source, checksum=checksum)
    if dataset == "hwdb":
        from tasks.decode_hwdb import DecodeHwdb

        return DecodeHwdb(dataset=dataset, source=source, checksum=checksum)
    raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DEFAULTS)}")
