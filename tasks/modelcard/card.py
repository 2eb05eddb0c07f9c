"""A published model's card, following the Model Card Toolkit's JSON schema v0.0.2 (tasks/modelcard/schema.py).
Plain Python (no Luigi, no TensorFlow): `build_model_card` turns what the publish stage read from the artifacts
(metrics.json, datacheck.json, publish.json, the train manifest's parameters) into the card's dict.

Where the card's facts go:

- ``model_details``: name, a one-line overview, documentation (serving, training parameters, provenance: artifact
  keys and source fingerprints), the version with its date and, as its ``diff``, the comparison with the champion.
- ``model_parameters``: the architecture, input and output formats, and one ``data`` entry per split with the
  data check's statistics (examples, classes, balance, pixels; its warnings on the first) and its graphics.
- ``quantitative_analysis``: every headline metric (the dataset metric with a 95% Wilson interval) and per class
  precision, recall (with its interval), F1 and support, each a ``performance_metric`` whose ``slice`` names the
  split and class.
- ``considerations``: ``limitations`` (classes never predicted, classes the test split lacks, the model's health
  warnings, the data check's warnings and drops) and ``tradeoffs`` (the champion/challenger comparison in words,
  and the comparison record itself as JSON: the schema has no structured place for it).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.datacheck.checks import split_rank
from tasks.modelcard.schema import SCHEMA_VERSION
from tasks.store.layout import PUBLISH_RECORD_FILE

WILSON_Z = 1.959964  # the normal quantile of a two-sided 95% interval
LISTED_NAMES = 100  # class names spelled out in one sentence; the count is always whole
LISTED_CHANGES = 5  # per-class recall changes named in the comparison sentence
# metrics.json's headline metrics, in the order a card lists them (those a run has).
HEADLINE_METRICS = ("top1_accuracy", "top_k_accuracy", "balanced_accuracy", "macro_f1", "char_accuracy",
                    "sequence_accuracy")
PER_CLASS_METRICS = ("precision", "recall", "f1", "support")
CLASS_SLICE = ", class "  # a per-class metric's slice: "<split> split, class <name>"
POSITION_SLICE = ", position "  # a per-position accuracy's slice (multi-head models)
# The start of the tradeoff that holds the comparison record itself (JSON follows).
COMPARISON_RECORD = f"The comparison as {PUBLISH_RECORD_FILE} records it: "


@dataclass(frozen=True)
class ModelCardInputs:
    """What the publish stage knows of a published version: plain values read from the artifacts."""

    name: str  # the published name (``published/<name>/``)
    version: int  # the published version number
    date: str  # the day it was published, ISO (YYYY-MM-DD)
    dataset: str  # the pipeline's dataset
    metric: str  # the dataset metric the publish gate judges (a key of metrics.json)
    metrics: Mapping[str, Any]  # the evaluate artifact's metrics.json
    class_names: Sequence[str]  # labels.txt, in index order
    image_shape: Sequence[int]  # (height, width, channels) the model reads
    architecture: str  # the model builder that made it (the train artifact's train_info.json ``model``)
    train_params: Mapping[str, Any] = field(default_factory=dict)  # the train artifact's MANIFEST.json params
    datacheck: Mapping[str, Any] | None = None  # the data check's datacheck.json; None when none ran
    decision: Mapping[str, Any] | None = None  # publish.json: the gate's decision, its ``comparison`` if any
    artifact_keys: Mapping[str, str] = field(default_factory=dict)  # stage -> artifact key (or bucket prefix)
    source_fingerprints: Mapping[str, str] = field(default_factory=dict)  # source role -> content fingerprint
    path: str = ""  # where the version is published (a folder or a URL); '' leaves it out
    licenses: Sequence[str] = ()  # SPDX identifiers of the model's licence(s)
    references: Sequence[str] = ()  # URIs with more about the model or its data
    data_graphics: Mapping[str, bytes] = field(default_factory=dict)  # caption -> PNG of the data (class histogram)
    analysis_graphics: Mapping[str, bytes] = field(default_factory=dict)  # caption -> PNG (confusion matrix)

    @property
    def num_heads(self) -> int:
        return int(self.metrics.get("num_heads", 1))

    @property
    def split(self) -> str:
        return str(self.metrics.get("split", "test"))


def build_model_card(inputs: ModelCardInputs) -> dict[str, Any]:
    """The card of ``inputs``' published version, a dict following the Model Card Toolkit's schema v0.0.2
    (check it with `tasks.modelcard.schema.validate_model_card`)."""
    if inputs.metric not in inputs.metrics:
        raise ValueError(f"the evaluation's metrics hold no {inputs.metric!r} (the dataset metric) for the card")
    if len(inputs.image_shape) != 3:
        raise ValueError(f"image shape {list(inputs.image_shape)} is not (height, width, channels)")
    return {
        "schema_version": SCHEMA_VERSION,
        "model_details": model_details(inputs),
        "model_parameters": model_parameters(inputs),
        "quantitative_analysis": quantitative_analysis(inputs),
        "considerations": considerations(inputs),
    }


# ---- model details ---------------------------------------------------------------------------------------------
def model_details(inputs: ModelCardInputs) -> dict[str, Any]:
    details: dict[str, Any] = {
        "name": inputs.name,
        "overview": overview(inputs),
        "documentation": documentation(inputs),
        "version": {"name": str(inputs.version), "date": inputs.date, "diff": version_diff(inputs)},
    }
    if inputs.path:
        details["path"] = inputs.path
    if inputs.licenses:
        details["licenses"] = [{"identifier": identifier} for identifier in inputs.licenses]
    if inputs.references:
        details["references"] = [{"reference": uri} for uri in inputs.references]
    return details


def overview(inputs: ModelCardInputs) -> str:
    height, width, channels = (int(n) for n in inputs.image_shape)
    classes = len(inputs.class_names)
    labels = (f"one of {classes} classes" if inputs.num_heads == 1
              else f"{inputs.num_heads} labels, each one of {classes} classes")
    value = float(inputs.metrics[inputs.metric])
    return (f"A {inputs.architecture} classifier for the {inputs.dataset} dataset ({height}x{width}x{channels} images) "
            f"giving each image {labels}; {inputs.metric} {value:.4f} on {examples(inputs)} {inputs.split} examples.")


def documentation(inputs: ModelCardInputs) -> str:
    """How to use the model, how it was trained and where it came from, one paragraph each."""
    paragraphs = [
        "Serving: the SavedModel beside this card takes encoded images (the bytes of PNG, JPEG, GIF or BMP files), "
        "decodes and resizes them to the model's input shape inside its graph, and returns class probabilities "
        "with the top classes; labels.txt names the classes by index.",
    ]
    if inputs.train_params:
        listed = ", ".join(f"{key}={value}" for key, value in sorted(inputs.train_params.items()))
        paragraphs.append(f"Training parameters (the train artifact's): {listed}.")
    if inputs.artifact_keys:
        listed = ", ".join(f"{stage} {key}" for stage, key in inputs.artifact_keys.items())
        paragraphs.append(f"Artifact keys: {listed}.")
    if inputs.source_fingerprints:
        listed = ", ".join(f"{role} {digest}" for role, digest in sorted(inputs.source_fingerprints.items()))
        paragraphs.append(f"Source fingerprints: {listed}.")
    return "\n\n".join(paragraphs)


def version_diff(inputs: ModelCardInputs) -> str:
    comparison = _comparison(inputs)
    if comparison is not None:
        return comparison_sentence(comparison)
    decision = inputs.decision or {}
    if decision.get("current_version") is not None:
        return gate_sentence(decision)
    return f"The first published version of {inputs.name}." if decision else "No earlier version was compared."


# ---- model parameters ------------------------------------------------------------------------------------------
def model_parameters(inputs: ModelCardInputs) -> dict[str, Any]:
    height, width, channels = (int(n) for n in inputs.image_shape)
    classes = len(inputs.class_names)
    heads = inputs.num_heads
    output = (f"probabilities over {classes} classes" if heads == 1
              else f"probabilities over {classes} classes for each of {heads} positions")
    return {
        "model_architecture": inputs.architecture,
        "input_format": (f"encoded image bytes, decoded to {height}x{width}x{channels} uint8 pixels (resized when "
                         "they differ) and scaled to [0, 1] inside the model"),
        "input_format_map": [{"key": "height", "value": str(height)}, {"key": "width", "value": str(width)},
                             {"key": "channels", "value": str(channels)}],
        "output_format": output + " (labels.txt names them by index)",
        "output_format_map": [{"key": "classes", "value": str(classes)}, {"key": "heads", "value": str(heads)}],
        "data": data_entries(inputs),
    }


def data_entries(inputs: ModelCardInputs) -> list[dict[str, Any]]:
    """One entry per split the data check saw (the data check's summary and the graphics on the first), or
    the evaluated split alone when no data check ran."""
    report = inputs.datacheck
    entries: list[dict[str, Any]]
    if report is None or not report.get("splits"):
        entries = [{"name": f"{inputs.dataset} {inputs.split} split",
                    "description": f"The {inputs.split} split: {examples(inputs)} examples (no data check ran)."}]
    else:
        entries = [{"name": f"{inputs.dataset} {split} split",
                    "description": split_description(split, stats, report, inputs.num_heads)}
                   for split, stats in sorted(report["splits"].items(), key=lambda item: split_rank(item[0]))]
        entries[0]["description"] += "\n\n" + datacheck_summary(report)
    if inputs.data_graphics:
        entries[0]["graphics"] = graphics("The data check's pictures of the splits", inputs.data_graphics)
    return entries


def split_description(split: str, stats: Mapping[str, Any], report: Mapping[str, Any], num_heads: int) -> str:
    classes = report["classes"]
    counted = "examples" if num_heads == 1 else "label occurrences (every position)"
    balance = stats["balance"]
    present = sum(1 for count in stats["class_counts"] if count)
    sentences = [f"The {split} split: {stats['examples']} examples; {present} of {len(classes)} classes present, "
                 f"{balance['largest']} {counted} in the largest class and {balance['smallest']} in the smallest"
                 + (f" (ratio {balance['ratio']})." if balance["ratio"] is not None else ".")]
    if stats["missing_classes"]:
        sentences.append(f"Missing classes: {name_list(stats['missing_classes'])}.")
    pixels = stats["pixels"]
    sentences.append(f"Pixel mean {_channels(pixels['mean'])}, spread {_channels(pixels['std'])} per channel; "
                     f"{stats['degenerate']} nearly blank images.")
    sizes = stats.get("original_sizes")
    if sizes:
        distinct = int(sizes["distinct_sizes"])
        sentences.append(f"Source images {sizes['height']['median']:g}x{sizes['width']['median']:g} (median "
                         f"height x width), {distinct} distinct size{'s' if distinct != 1 else ''}.")
    dropped = report.get("dropped", {}).get(split, 0)
    if dropped:
        sentences.append(f"The data check dropped {dropped} of its examples.")
    return " ".join(sentences)


def datacheck_summary(report: Mapping[str, Any]) -> str:
    classes = report["classes"]
    verdict = "passed" if report["passed"] else "failed"
    warnings = report["warnings"]
    found = (f"with {len(warnings)} warning{'s' if len(warnings) > 1 else ''}: {'; '.join(warnings)}" if warnings
             else "with no warnings")
    return f"Data check: {verdict} {found}. Classes ({len(classes)}): {name_list(classes)}."


def graphics(description: str, pictures: Mapping[str, bytes]) -> dict[str, Any]:
    return {"description": description,
            "collection": [{"name": caption, "image": base64.b64encode(png).decode("ascii")}
                           for caption, png in pictures.items()]}


# ---- quantitative analysis -------------------------------------------------------------------------------------
def quantitative_analysis(inputs: ModelCardInputs) -> dict[str, Any]:
    analysis: dict[str, Any] = {"performance_metrics": headline_metrics(inputs) + per_class_metrics(inputs)}
    if inputs.analysis_graphics:
        analysis["graphics"] = graphics(f"The evaluation on the {inputs.split} split", inputs.analysis_graphics)
    return analysis


def headline_metrics(inputs: ModelCardInputs) -> list[dict[str, Any]]:
    metrics, split = inputs.metrics, f"{inputs.split} split"
    rows = []
    for name in HEADLINE_METRICS:
        if name not in metrics:
            continue
        kind = f"top{metrics.get('top_k', 'k')}_accuracy" if name == "top_k_accuracy" else name
        row = metric_row(kind, float(metrics[name]), split)
        trials = metric_trials(inputs, name)
        if name == inputs.metric and trials:
            row["confidence_interval"] = interval(float(metrics[name]), trials)
        rows.append(row)
    for position, value in enumerate(metrics.get("per_head_accuracy", []), start=1):
        rows.append(metric_row("accuracy", float(value), f"{split}{POSITION_SLICE}{position}"))
    return rows


def metric_trials(inputs: ModelCardInputs, name: str) -> int:
    """How many right-or-wrong trials a proportion metric counts (0: not a proportion of trials)."""
    examples_seen = examples(inputs)
    if name == "sequence_accuracy":
        return examples_seen
    if name in ("top1_accuracy", "top_k_accuracy", "char_accuracy"):
        return examples_seen * inputs.num_heads  # one trial per character of a multi-head label
    return 0


def per_class_metrics(inputs: ModelCardInputs) -> list[dict[str, Any]]:
    rows = []
    for entry in inputs.metrics.get("per_class", []):
        where = f"{inputs.split} split{CLASS_SLICE}{entry['class']}"
        support = int(entry["support"])
        for name in PER_CLASS_METRICS:
            if name == "support":
                rows.append({"type": name, "value": str(support), "slice": where})
                continue
            row = metric_row(name, float(entry[name]), where)
            if name == "recall" and support:
                row["confidence_interval"] = interval(float(entry[name]), support)
            rows.append(row)
    return rows


def metric_row(kind: str, value: float, where: str) -> dict[str, Any]:
    return {"type": kind, "value": f"{value:.4f}", "slice": where}


def interval(proportion: float, trials: int) -> dict[str, str]:
    low, high = wilson_interval(proportion, trials)
    return {"lower_bound": f"{low:.4f}", "upper_bound": f"{high:.4f}"}


def wilson_interval(proportion: float, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion observed over ``trials`` (> 0) right-or-wrong trials."""
    if trials <= 0:
        raise ValueError(f"an interval needs at least one trial, got {trials}")
    p = min(max(proportion, 0.0), 1.0)
    scale = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / scale
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4 * trials * trials)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


# ---- considerations --------------------------------------------------------------------------------------------
def considerations(inputs: ModelCardInputs) -> dict[str, Any]:
    found: dict[str, Any] = {"limitations": [{"description": text} for text in limitations(inputs)]}
    tradeoffs = tradeoff_texts(inputs)
    if tradeoffs:
        found["tradeoffs"] = [{"description": text} for text in tradeoffs]
    return found


def limitations(inputs: ModelCardInputs) -> list[str]:
    split = inputs.split
    health = inputs.metrics.get("health") or {}
    texts = [evaluation_extent(inputs),
             f"The model gives every image one of its {_classes(len(inputs.class_names))}, also an image of none "
             "of them: it has no class for 'something else'."]
    never = list(health.get("classes_never_predicted", []))
    if never:
        texts.append(f"Never predicted on the {split} split: the model predicted {_classes(len(never))} for no "
                     f"{split} image, although the split holds examples of them: {name_list(never)}.")
    absent = [str(row["class"]) for row in inputs.metrics.get("per_class", []) if not int(row["support"])]
    if absent:
        texts.append(f"Not evaluated: the {split} split holds no example of {_classes(len(absent))}, so their "
                     f"precision and recall say nothing: {name_list(absent)}.")
    texts += [f"Model health: {_sentence(warning)}" for warning in health.get("warnings", [])]
    if inputs.datacheck is None:
        texts.append("No data check ran on the examples (leaks, duplicates and label conflicts were not looked for).")
    else:
        texts += [f"Data check: {_sentence(warning)}" for warning in inputs.datacheck["warnings"]]
        dropped = {split: n for split, n in inputs.datacheck.get("dropped", {}).items() if n}
        if dropped:
            listed = ", ".join(f"{n} from {split}" for split, n in dropped.items())
            texts.append(f"The data check dropped {sum(dropped.values())} examples before training ({listed}).")
    return texts


def evaluation_extent(inputs: ModelCardInputs) -> str:
    """What the test metric can vouch for: its split's size, its interval, and nothing beyond that data."""
    value, trials = float(inputs.metrics[inputs.metric]), metric_trials(inputs, inputs.metric)
    measured = f"{inputs.metric} {value:.4f}"
    if trials:
        low, high = wilson_interval(value, trials)
        measured += f" (95% interval {low:.4f} to {high:.4f})"
    return (f"Measured on {examples(inputs)} {inputs.split} examples of the {inputs.dataset} dataset only: "
            f"{measured}. How it does on images unlike these (other sources, sizes or kinds) is unknown.")


def tradeoff_texts(inputs: ModelCardInputs) -> list[str]:
    comparison = _comparison(inputs)
    decision = inputs.decision or {}
    if comparison is not None:
        return [comparison_sentence(comparison) + per_class_changes(comparison),
                COMPARISON_RECORD + json.dumps(comparison, sort_keys=True)]
    if decision.get("current_version") is not None:
        return [gate_sentence(decision)]
    return []


def comparison_sentence(comparison: Mapping[str, Any]) -> str:
    """The champion/challenger comparison in words: the paired metric, McNemar's test, what was left out."""
    version, metric, count = comparison["champion_version"], comparison["metric"], comparison["examples"]
    left_out = comparison.get("left_out", {})
    skipped = [f"{left_out[reason]} {what}" for reason, what in
               (("trained_on", f"that version {version} trained on"),
                ("unknown_class", f"of a class version {version} does not know")) if left_out.get(reason)]
    leaving = f" ({'; '.join(skipped)} left out)" if skipped else ""
    if not count or comparison["champion"] is None or comparison["challenger"] is None:
        return f"Compared with version {version}: no test example could be paired{leaving}."
    test = comparison["mcnemar"]
    text = (f"Compared with version {version} on the same {count} test examples{leaving}: {metric} "
            f"{comparison['challenger']:.4f} (this version) vs {comparison['champion']:.4f} (version {version}); "
            f"McNemar b={test['b']} (right before, wrong now), c={test['c']} (wrong before, right now), "
            f"p={test['p_value']:.3g}.")
    if not comparison.get("trained_on_known", True):
        text += f" Which test examples version {version} trained on is unknown: none were left out for it."
    return text


def per_class_changes(comparison: Mapping[str, Any]) -> str:
    changed = [row for row in comparison.get("per_class", []) if row["delta"]]
    if not changed:
        return ""
    largest = sorted(changed, key=lambda row: (-abs(row["delta"]), str(row["class"])))[:LISTED_CHANGES]
    listed = ", ".join(f"{row['class']} {row['delta']:+.3f} ({row['count']} examples)" for row in largest)
    return f" Largest changes of per-class recall: {listed}."


def gate_sentence(decision: Mapping[str, Any]) -> str:
    """The publish gate's judgement when no paired comparison was recorded."""
    return (f"The publish gate compared {decision['metric']} {decision['value']:.4f} with version "
            f"{decision['current_version']}'s {decision['current_value']:.4f} (not on paired examples).")


# ---- small helpers ---------------------------------------------------------------------------------------------
def _comparison(inputs: ModelCardInputs) -> Mapping[str, Any] | None:
    comparison = (inputs.decision or {}).get("comparison")
    return comparison if isinstance(comparison, Mapping) else None


def examples(inputs: ModelCardInputs) -> int:
    return int(inputs.metrics.get("examples", inputs.metrics.get("num_examples", 0)))


def name_list(names: Sequence[str], limit: int = LISTED_NAMES) -> str:
    shown = ", ".join(str(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _classes(count: int) -> str:
    return "1 class" if count == 1 else f"{count} classes"


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


def _channels(values: Sequence[float]) -> str:
    return "/".join(f"{value:.1f}" for value in values)
