"""The fashion_mnist pipeline: `tfpipe run fashion_mnist`, or under plain Luigi
`luigi --module pipelines.fashion_mnist FashionMnist --local-scheduler`."""

from pipelines.stages import pipeline_task, register_wrappers

register_wrappers()
FashionMnist = pipeline_task("fashion_mnist")
