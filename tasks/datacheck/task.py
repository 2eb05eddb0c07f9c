"""Datacheck stage: look at the examples before anything trains on them.

Between the TFRecord shards and training. From the decode artifact's arrays (the same pixels the shards hold)
it counts classes per split, finds exact duplicates, leaks across splits and label conflicts by the examples'
content keys, near duplicates across splits by perceptual hash, degenerate images, pixel and original-size
statistics (tasks/datacheck/checks.py). Its policies decide: leaks and label conflicts fail the run by default,
naming every finding at once; the rest warn; ``drop`` removes the examples concerned and says how many. It
provides the checked examples to the stages after it: the shards handed on as they are, or rewritten without
the dropped examples. Drift against the previous run is not part of this artifact (it is keyed by its inputs and
policies only): ``tfpipe run`` computes it (pipelines/commands/run_drift.py) with the thresholds below.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import luigi
import numpy as np

from tasks.data.imagedirs import load_assignment
from tasks.data.shards import load_dataset_info, save_dataset_info
from tasks.data.tfds_metadata import write_tfds_metadata
from tasks.datacheck.checks import CheckResult, check_examples
from tasks.datacheck.drift import DriftThresholds, data_summary
from tasks.datacheck.files import (
    CLASS_HISTOGRAM_FILE,
    DATA_REPORT_FILE,
    DATACHECK_FILE,
    PAIRS_FILE,
    SAMPLE_GRID_FILE,
    SIZES_FILE,
)
from tasks.datacheck.policies import DEFAULT_POLICIES, FINDING_POLICIES, CheckSettings
from tasks.datacheck.scan import SplitExamples
from tasks.datacheck.shards import hand_on_files, rewrite_split
from tasks.formats.dataset_info import SplitInfo
from tasks.formats.examples import load_original_sizes, load_split
from tasks.formats.files import LABELS_FILE
from tasks.formats.tfrecord import read_labels_txt
from tasks.store.layout import REPORTS_DIR
from tasks.store.task import ArtifactTask


class DataCheckFailed(ValueError):
    """Findings whose policy is ``fail``: every one named, and where the whole report is."""


def _policy(kind: str, **kwargs: Any) -> luigi.ChoiceParameter:
    return luigi.ChoiceParameter(choices=list(FINDING_POLICIES[kind]), default=DEFAULT_POLICIES[kind], **kwargs)


class DataCheck(ArtifactTask):
    stage = "datacheck"
    version = 1
    reads = ("examples", "decoded", "image_dirs")
    provides = "examples"

    dataset = luigi.Parameter(description="the dataset's name (the report's title)")
    on_leak = _policy("leak", description="the same pixels in two splits: fail, warn, or drop the later splits' copies")
    on_conflict = _policy("conflict", description="the same pixels under two labels: fail, warn, or drop every copy")
    on_duplicate = _policy("duplicate", description="copies within a split: fail, warn, or drop all but the first")
    on_degenerate = _policy("degenerate", description="constant or nearly blank images: fail, warn or drop")
    on_near_duplicate = _policy("near_duplicate", description="perceptually equal images in two splits: fail, "
                                                              "warn, or drop the later split's copy")
    on_imbalance = _policy("imbalance", description="missing classes or largest/smallest class beyond "
                                                    "imbalance_ratio: fail or warn")
    near_duplicate_distance = luigi.IntParameter(default=4, description="bits (of 64) two perceptual hashes may "
                                                                        "differ in to count as near duplicates")
    degenerate_std = luigi.FloatParameter(default=2.0, description="pixel spread (0-255) under which an image is "
                                                                   "constant or nearly blank")
    imbalance_ratio = luigi.FloatParameter(default=10.0, description="largest / smallest class above which a split "
                                                                     "is imbalanced")
    # Drift is judged per run by `tfpipe run`, not in this artifact: these are not part of its key.
    on_drift = _policy("drift", significant=False, description="data drift against the previous run: fail or warn")
    drift_proportion = luigi.FloatParameter(default=0.1, significant=False,
                                            description="total variation distance of class proportions beyond "
                                                        "which the data drifted")
    drift_pixels = luigi.FloatParameter(default=0.25, significant=False,
                                        description="shift of a channel's pixel mean, in the previous run's standard "
                                                    "deviations, beyond which the data drifted")

    def settings(self) -> CheckSettings:
        return CheckSettings(
            on_leak=self.on_leak, on_conflict=self.on_conflict, on_duplicate=self.on_duplicate,
            on_degenerate=self.on_degenerate, on_near_duplicate=self.on_near_duplicate,
            on_imbalance=self.on_imbalance, near_duplicate_distance=self.near_duplicate_distance,
            degenerate_std=self.degenerate_std, imbalance_ratio=self.imbalance_ratio)

    def drift_thresholds(self) -> DriftThresholds:
        return DriftThresholds(proportion=self.drift_proportion, pixels=self.drift_pixels)

    def build(self, out_dir: Path) -> dict[str, Any]:
        settings = self.settings()
        self.drift_thresholds()  # a bad threshold is refused before the work, not after it
        examples = self.input_dir("examples")
        class_names = read_labels_txt(examples / LABELS_FILE)
        splits = self.split_examples()
        total = sum(len(s) for s in splits)
        done = [0]

        def progress(rows: int) -> None:
            done[0] += rows
            self.report_progress(done[0], total, f"checked {done[0]}/{total} examples")

        result = check_examples(splits, class_names, settings, progress)
        self.write_report(out_dir, result, splits, class_names)
        if result.failures:
            kept = self.keep_refused_report(out_dir)
            raise DataCheckFailed(f"data check failed ({len(result.failures)} finding(s) set to fail): "
                                  + " | ".join(result.failures) + f" (report: {kept})")
        counts = self.hand_on(examples, out_dir, splits, result)
        summary = data_summary(result.report, self.artifact_key)
        notices = [f"dropped {n} examples from {split}" for split, n in result.report["dropped"].items() if n]
        return {"records": counts, "warnings": result.warnings, "dropped": result.report["dropped"],
                "data_summary": summary, "data_report": DATA_REPORT_FILE, "notices": notices}

    def split_examples(self) -> list[SplitExamples]:
        decoded, image_dirs = self.input_dir("decoded"), self.input_dir("image_dirs")
        splits = []
        for split, (source_split, rows) in load_assignment(image_dirs).items():
            arrays = load_split(decoded, source_split)
            splits.append(SplitExamples(split, arrays["image"], arrays["label"], arrays["key"], arrays["sha256"],
                                        np.asarray(rows), load_original_sizes(decoded, source_split)))
        return splits

    def write_report(self, out_dir: Path, result: CheckResult, splits: list[SplitExamples],
                     class_names: list[str]) -> None:
        # Matplotlib is imported here, not with the module: `tfpipe status` loads every stage's task.
        from tasks.datacheck.report import (
            pair_list,
            plot_class_histogram,
            plot_pairs,
            plot_samples,
            plot_sizes,
            report_pictures,
            write_data_report,
        )

        by_name = {s.name: s for s in splits}

        def pixels(split: str, index: int) -> np.ndarray:
            s = by_name[split]
            return np.asarray(s.images[s.rows[index]])

        plot_class_histogram(result.report, out_dir / CLASS_HISTOGRAM_FILE)
        first = splits[0] if splits else None
        if first is not None and len(first) and first.label_rows().ndim == 1:
            plot_samples(first.label_rows(), lambda i: pixels(first.name, i), class_names, out_dir / SAMPLE_GRID_FILE)
        pairs = pair_list(result.report)
        if pairs:
            plot_pairs(pairs, pixels, out_dir / PAIRS_FILE)
        sizes = {s.name: np.asarray(s.original_sizes[s.rows]) for s in splits
                 if s.original_sizes is not None and result.report["splits"][s.name]["original_sizes"]}
        if sizes and any(result.report["splits"][name]["original_sizes"]["varies"] for name in sizes):
            plot_sizes(sizes, out_dir / SIZES_FILE)
        (out_dir / DATACHECK_FILE).write_text(json.dumps(result.report, indent=1, sort_keys=True, ensure_ascii=False),
                                              encoding="utf-8")
        write_data_report(out_dir / DATA_REPORT_FILE, result.report, title=f"{self.dataset}: data check",
                          pictures=report_pictures(out_dir))

    def keep_refused_report(self, out_dir: Path) -> Path:
        """The report of a check that failed the run, kept outside the (never committed) artifact."""
        kept = self.artifact_root / REPORTS_DIR / self.stage / f"{self.task_family}-{self.artifact_key}"
        shutil.rmtree(kept, ignore_errors=True)
        kept.mkdir(parents=True)
        for name in (DATA_REPORT_FILE, DATACHECK_FILE):
            shutil.copy(out_dir / name, kept / name)
        return kept / DATA_REPORT_FILE

    def hand_on(self, examples: Path, out_dir: Path, splits: list[SplitExamples],
                result: CheckResult) -> dict[str, int]:
        """The checked examples into ``out_dir``: the shards as they are, the splits that lost examples rewritten."""
        hand_on_files(examples, out_dir, skip=frozenset({DATACHECK_FILE, DATA_REPORT_FILE}))
        info = load_dataset_info(examples)
        counts = {name: info.count(name) for name in info.splits}
        by_name = {s.name: s for s in splits}
        new_splits = dict(info.splits)
        for split, positions in result.dropped.items():
            if not len(positions):
                continue
            s = by_name[split]
            keys = frozenset(bytes(k).rstrip(b"\0") for k in np.asarray(s.keys[s.rows[positions]]))
            files = list(info.split(split).files)
            counts[split] = rewrite_split(examples, out_dir, files, keys)
            new_splits[split] = SplitInfo(counts[split], tuple(files), info.split(split).source)
        if any(len(p) for p in result.dropped.values()):  # the descriptions, as new files (not through the links)
            checked = info.with_splits(new_splits)
            save_dataset_info(out_dir, checked)
            write_tfds_metadata(out_dir, checked, read_labels_txt(out_dir / LABELS_FILE))
        return counts
