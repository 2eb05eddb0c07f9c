"""The cifar10 pipeline: `tfpipe run cifar10` or `luigi --module pipelines.cifar10 Cifar10 --local-scheduler`."""

from pipelines.stages import Pipeline


class Cifar10(Pipeline):
    dataset_name = "cifar10"
