"""The images pipeline: `tfpipe run images` or `luigi --module pipelines.images Images --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Images = pipeline_task("images")
