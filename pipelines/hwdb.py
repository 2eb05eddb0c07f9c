"""The hwdb pipeline: `tfpipe run hwdb` or `luigi --module pipelines.hwdb Hwdb --local-scheduler`."""

from pipelines.stages import Pipeline


class Hwdb(Pipeline):
    dataset_name = "hwdb"
