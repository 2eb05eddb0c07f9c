"""The captcha pipeline: `tfpipe run captcha` or `luigi --module pipelines.captcha Captcha --local-scheduler`."""

from pipelines.stages import Pipeline


class Captcha(Pipeline):
    dataset_name = "captcha"
