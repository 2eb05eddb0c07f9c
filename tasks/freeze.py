"""Freeze stage: SavedModel taking encoded image bytes, frozen GraphDef, labels.txt; verified on reload."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.base import ArtifactTask
from tasks.train import MODEL_FILE


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
        import keras

        from tasks.formats.tfrecord import read_labels_txt
        from tasks.ops.freeze import export_serving_model, verify_exported
        from tasks.ops.shards import encode_image, load_dataset_info, load_split_arrays

        shards, trained = self.input_dir("examples"), self.input_dir("model")
        info = load_dataset_info(shards)
        image_shape = info.image_shape
        # Dropout's seed-generator state is a variable of the SavedModel: seeded, a rebuild gives the same bytes.
        keras.utils.set_random_seed(0)
        model = keras.models.load_model(trained / MODEL_FILE, compile=False)
        export_serving_model(model, out_dir, image_shape=image_shape,
                             class_names=read_labels_txt(shards / "labels.txt"), top_k=self.top_k)
        split = "test" if "test" in info.splits else "validation"
        held_out, _ = load_split_arrays(shards, split, limit=self.verify_images)
        encoded = [encode_image(image, "png") for image in held_out]
        max_diff = verify_exported(out_dir, model, encoded, image_shape=image_shape, tolerance=self.tolerance)
        # The trained Keras model rides along, so this freeze directory can be another pipeline's backbone.
        shutil.copy(trained / MODEL_FILE, out_dir / MODEL_FILE)
        evaluation = self.requires()["evaluation"]
        return {"max_abs_diff": max_diff, "verified_images": len(encoded), "model_dir": ".",
                # Relative to this artifact, as every manifest path is: right with a relative artifact root too.
                "report_html": os.path.relpath(evaluation.artifact_dir / "report.html", self.artifact_dir)}
