"""The cifar100 pipeline: `tfpipe run cifar100` or `luigi --module pipelines.cifar100 Cifar100 --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Cifar100 = pipeline_task("cifar100")
