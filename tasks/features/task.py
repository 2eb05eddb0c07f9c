"""Bottleneck stage: every example run once through a frozen backbone; features cached per image.

Switched on by the pipeline parameter ``backbone`` (``tfpipe run ... --backbone keras:InceptionV3``). It
reads the TFRecord shards and provides ``features``: per split ``<split>.features.npy`` (N, D) float32,
``<split>.labels.npy`` and ``<split>.keys.npy`` (content keys), and for ``feature_views = K > 0`` the K
augmented views of the training split (``train.view<k>.features.npy``). Every vector comes from the
content-addressed cache under the artifact root when it is there (tasks/features/cache.py; on a bucket root
shared through the bucket, tasks/features/bucket_packs.py); the manifest and the run's summary say how many
were computed and how many reused.

A ``.keras`` or freeze backbone is fed tfpipe's [0, 1] pixels scaled to the range its network takes
(``input_range``: given, or read from its leading Rescaling/Normalization layer); ``features.json`` and the
manifest record the range and why. Training features that are nearly constant across images fail the stage
with one line (tasks/features/extract.py ``check_features_vary``): the usual cause is a wrong input range.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import luigi
import numpy as np

from models.backbone_spec import (
    INPUT_RANGE_AUTO,
    INPUT_RANGES,
    BackboneSpec,
    parse_backbone,
    parse_input_range,
)
from tasks.features.backbone_digest import backbone_digest
from tasks.features.cache import FeatureCache, cache_root, namespace, packs_used
from tasks.features.files import FEATURES_INFO_FILE, FEATURES_SUFFIX, KEYS_SUFFIX, LABELS_SUFFIX
from tasks.formats.dataset_info import DatasetInfo
from tasks.formats.files import LABELS_FILE
from tasks.store.task import ArtifactTask, opened_root

if TYPE_CHECKING:
    from tasks.features.bucket_packs import BucketPacks

# Pixels fed unscaled: [0, 1] as they are, or the kind's own
# preprocessing (models.backbones.UNIT_RANGE, OWN_PREPROCESSING). Features fed so stay in their old cache.
UNSCALED_RANGES = ("0-1", "own")


class InputRangeParameter(luigi.Parameter):
    """auto, 0-1, 0-255 or -1-1 (models/backbone_spec.py ``parse_input_range``)."""

    def normalize(self, x: str) -> str:
        return parse_input_range(x)


class Bottleneck(ArtifactTask):
    stage = "bottleneck"
    version = 2
    reads = ("examples",)
    provides = "features"
    resources = {"gpu": 1}  # the accelerator token Train also takes ([resources] in luigi.cfg)

    backbone = luigi.Parameter(description="keras:<Application>, a .keras file, a frozen .pb or a freeze directory")
    backbone_weights = luigi.Parameter(default="imagenet", description="keras: imagenet, none or a weights file")
    backbone_layer = luigi.Parameter(default="", description="the layer whose output is the feature "
                                                             "('' = the input of the last Dense layer)")
    input_tensor = luigi.Parameter(default="DecodeJpeg/contents:0", description=".pb: the encoded-JPEG input")
    output_tensor = luigi.Parameter(default="pool_3/_reshape:0", description=".pb: the feature tensor")
    input_range = InputRangeParameter(
        default=INPUT_RANGE_AUTO, description=f"the pixel range a .keras or freeze backbone takes: "
                                              f"{', '.join((INPUT_RANGE_AUTO, *INPUT_RANGES))} (auto = read from "
                                              "its leading Rescaling or Normalization layer, else 0-1)")
    feature_views = luigi.IntParameter(default=0, description="augmented views cached per training image "
                                                              "(0 = no augmentation)")
    view_seed = luigi.IntParameter(default=0)
    dataset_augmentation: luigi.DictParameter[dict[str, Any]] = luigi.DictParameter(
        default={}, description="the dataset's augmentation for the views (set by the pipeline)")
    batch_size = luigi.IntParameter(default=64, significant=False, description="images per backbone call")

    def spec(self) -> BackboneSpec:
        return parse_backbone(self.backbone, weights=self.backbone_weights, layer=self.backbone_layer,
                              input_tensor=self.input_tensor, output_tensor=self.output_tensor,
                              input_range=self.input_range)

    def source_fingerprints(self) -> dict[str, str]:
        from tasks.sources.fingerprint import stat_cache_path

        return {"backbone": backbone_digest(self.spec(), cache_file=stat_cache_path(self.artifact_root))}

    def cache_for(self, info: DatasetInfo, view: int, pixel_range: str) -> FeatureCache:
        """The cache namespace of this backbone fed ``pixel_range`` pixels of ``view``."""
        preprocessing: dict[str, Any] = {"image_shape": list(info.image_shape), "view": view,
                                         "seed": self.view_seed if view else 0,
                                         "augment": self.augmentation() if view else {}}
        if pixel_range not in UNSCALED_RANGES:
            preprocessing["input_range"] = pixel_range
        digest = self.identity.upstream["source:backbone"]
        return FeatureCache(cache_root(self.artifact_root) / namespace(digest, preprocessing))

    def shared_packs(self) -> BucketPacks | None:
        """On a bucket root, the packs every host shares through it (tasks/features/bucket_packs.py)."""
        bucket = opened_root().bucket
        if bucket is None:
            return None
        from tasks.features.bucket_packs import BucketPacks

        return BucketPacks(bucket)

    def augmentation(self) -> dict[str, Any]:
        return dict(self.dataset_augmentation)  # AugmentConfig's keys; absent ones keep its defaults (off)

    def build(self, out_dir: Path) -> dict[str, Any]:
        from models.backbones import feature_width, load_backbone_with_range
        from tasks.data.input_pipeline import AugmentConfig
        from tasks.data.shards import load_dataset_info
        from tasks.features.extract import check_features_vary, extract, split_batches

        if self.feature_views < 0:
            raise ValueError(f"Bottleneck.feature_views must be >= 0, got {self.feature_views}")
        shards = self.input_dir("examples")
        info = load_dataset_info(shards)
        if info.num_heads != 1:
            raise ValueError(f"{info.dataset}: bottleneck features train single-label heads; this set has "
                             f"{info.num_heads} heads")
        spec = self.spec()
        model, pixel_range = load_backbone_with_range(spec, info.image_shape)
        augment = AugmentConfig(**self.augmentation())
        jobs = [(split, 0) for split in info.splits] + [("train", v) for v in range(1, self.feature_views + 1)]
        total = sum(info.count(split) for split, _ in jobs)
        done_before = 0
        summary: dict[str, dict[str, int]] = {}
        used: set[str] = set()
        shared = self.shared_packs()
        for split, view in jobs:
            cache = self.cache_for(info, view, pixel_range.name)
            if shared is not None:
                self.show_status(f"{split}: fetching cached features from the bucket")
                shared.fetch(cache)

            def progress(n: int, base: int = done_before, s: str = split) -> None:
                self.report_progress(base + n, total, f"{s}: {n}")

            features, labels, keys, counts = extract(
                model, split_batches(shards, split, self.batch_size), cache, view=view, seed=self.view_seed,
                augment=augment, progress=progress)
            done_before += len(keys)
            if (split, view) == ("train", 0):
                check_features_vary(features, keys, backbone=self.backbone,
                                    hint=self.constant_features_hint(spec, pixel_range.name))
            name = split if view == 0 else f"{split}.view{view}"
            np.save(out_dir / f"{name}{FEATURES_SUFFIX}", features, allow_pickle=False)
            np.save(out_dir / f"{name}{LABELS_SUFFIX}", labels, allow_pickle=False)
            np.save(out_dir / f"{name}{KEYS_SUFFIX}", np.asarray(keys, dtype="S32"), allow_pickle=False)
            summary[name] = {"computed": counts.computed, "reused": counts.reused}
            packs = packs_used(cache, keys)
            if shared is not None:  # before the commit: every pack the manifest names is on the bucket
                self.show_status(f"{split}: uploading cached features to the bucket")
                shared.publish(cache, packs)
            used.update(f"{cache.directory.name}/{pack}" for pack in packs)
        shutil.copy(shards / LABELS_FILE, out_dir / LABELS_FILE)
        info.save(out_dir)
        description = {"feature_dim": feature_width(model), "views": self.feature_views, "backbone": self.backbone,
                       "splits": {split: info.count(split) for split in info.splits},
                       "input_range": pixel_range.name, "input_range_reason": pixel_range.reason}
        (out_dir / FEATURES_INFO_FILE).write_text(json.dumps(description, indent=2, sort_keys=True))
        computed = sum(s["computed"] for s in summary.values())
        reused = sum(s["reused"] for s in summary.values())
        notices = [f"features: {computed} computed, {reused} reused from the cache"]
        if pixel_range.name not in UNSCALED_RANGES:
            notices.append(f"backbone fed {pixel_range.name} pixels: {pixel_range.reason}")
        return {"features": summary, "features_computed": computed, "features_reused": reused,
                "cache_packs": sorted(used), "feature_dim": description["feature_dim"],
                "input_range": pixel_range.name, "input_range_reason": pixel_range.reason, "notices": notices}

    @staticmethod
    def constant_features_hint(spec: BackboneSpec, pixel_range: str) -> str:
        """What to try when ``spec``'s features came out constant: another input range where the user may give
        one; the weights or feature layer otherwise."""
        if spec.kind in ("model", "freeze"):
            return (f"the backbone likely expects another input range than the {pixel_range} it was fed; "
                    f"set Bottleneck.input_range={'|'.join(INPUT_RANGES)}")
        return "the backbone's weights or its feature layer/tensor are likely wrong"


def load_features(directory: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, D) float32, labels) of one split (``train``, ``validation``, ``test``, ``train.view1``...)."""
    return (np.load(Path(directory) / f"{name}{FEATURES_SUFFIX}", allow_pickle=False),
            np.load(Path(directory) / f"{name}{LABELS_SUFFIX}", allow_pickle=False))


def feature_description(directory: Path) -> dict[str, Any]:
    return json.loads((Path(directory) / FEATURES_INFO_FILE).read_text())
