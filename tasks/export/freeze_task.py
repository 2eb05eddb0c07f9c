"""Freeze stage: SavedModel taking encoded image bytes, frozen GraphDef, labels.txt; verified on reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.evaluation.files import REPORT_FILE
from tasks.export.files import LABELS_FILE, MODEL_FILE
from tasks.store.task import ArtifactTask


class Freeze(ArtifactTask):
    """Reads the model, the examples (held-out images to verify the export) and the evaluation: a frozen
    model always has its report beside it."""

    stage = "freeze"
    version = 4
    reads = ("model", "examples", "evaluation")
    provides = "frozen"

    top_k = luigi.IntParameter(default=3)
    tolerance = luigi.FloatParameter(default=1e-5)
    verify_images = luigi.IntParameter(default=32, description="held-out images compared after reload")

    def build(self, out_dir: Path) -> dict[str, Any]:
        from models.builders import load_trained_model
        from tasks.data.shards import encode_image, load_dataset_info, load_split_arrays
        from tasks.export.freeze import ExportJob, export_model_file, verify_exported
        from tasks.formats.tfrecord import read_labels_txt
        from tasks.runtime.fresh_process import run_in_fresh_process

        shards, trained = self.input_dir("examples"), self.input_dir("model")
        info = load_dataset_info(shards)
        image_shape = info.image_shape
        self.show_status("exporting the SavedModel and the frozen graph")
        # In a fresh process: the export's bytes then do not depend on what this worker built before.
        run_in_fresh_process(export_model_file, ExportJob(
            model_file=trained / MODEL_FILE, out_dir=out_dir, image_shape=image_shape,
            class_names=tuple(read_labels_txt(shards / LABELS_FILE)), top_k=self.top_k))
        model = load_trained_model(trained / MODEL_FILE)
        split = "test" if "test" in info.splits else "validation"
        held_out, _ = load_split_arrays(shards, split, limit=self.verify_images)
        encoded = [encode_image(image, "png") for image in held_out]
        max_diff = verify_exported(out_dir, model, encoded, image_shape=image_shape, tolerance=self.tolerance)
        # The trained Keras model rides along, so this freeze directory can be another pipeline's backbone.
        shutil.copy(trained / MODEL_FILE, out_dir / MODEL_FILE)
        evaluation = self.upstream_task("evaluation")
        return {"max_abs_diff": max_diff, "verified_images": len(encoded), "model_dir": ".",
                # Relative to this artifact, as every manifest path is: right with a relative artifact root too.
                "report_html": os.path.relpath(evaluation.artifact_dir / REPORT_FILE, self.artifact_dir)}
