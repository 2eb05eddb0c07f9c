"""The cifar100 pipeline: `tfpipe run cifar100` or `luigi --module pipelines.cifar100 Cifar100 --local-scheduler`."""

from pipelines.stages import Pipeline


class Cifar100(Pipeline):
    dataset_name = "cifar100"
