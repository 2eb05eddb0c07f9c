"""The cifar10 pipeline: `tfpipe run cifar10` or `luigi --module pipelines.cifar10 Cifar10 --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Cifar10 = pipeline_task("cifar10")
