"""The captcha pipeline: `tfpipe run captcha` or `luigi --module pipelines.captcha Captcha --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
Captcha = pipeline_task("captcha")
