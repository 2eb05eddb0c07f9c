"""The mnist pipeline: `tfpipe run mnist` or `luigi --module pipelines.mnist Mnist --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Mnist = pipeline_task("mnist")
