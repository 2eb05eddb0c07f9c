"""The hwdb pipeline: `tfpipe run hwdb` or `luigi --module pipelines.hwdb Hwdb --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Hwdb = pipeline_task("hwdb")
