"""CIFAR-10/100 decode stage: python pickle batches -> decoded example arrays, batch by batch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import luigi

from tasks.datasets.cifar.codec import (
    CIFAR10,
    CIFAR100,
    CifarSpec,
    contents_listing,
    expected_files,
    read_label_names,
    resolve_root,
    spec_title,
    split_batch_paths,
)
from tasks.datasets.cifar.files import COARSE_LABELS_FILE
from tasks.datasets.cifar.parallel_decode import iter_batches
from tasks.formats.dataset_info import DatasetInfo, SplitInfo
from tasks.formats.errors import FormatError
from tasks.formats.examples import encode_keys, open_split_writer, save_class_names
from tasks.formats.files import EXTRACT_SCRATCH_DIR
from tasks.sources.task import RAW_DATA, downloaded_path
from tasks.store.task import ArtifactTask

SPECS = {spec.name: spec for spec in (CIFAR10, CIFAR100)}


def extract_if_archive(data: Path, scratch: Path) -> Path:
    if data.is_dir():
        return data
    from tasks.sources.archive import safe_extract

    safe_extract(data, scratch)
    return scratch


def check_complete(source: Path, top: Path, root: Path, spec: CifarSpec) -> None:
    """FormatError naming ``source`` (the archive or folder given) and every file of ``spec`` missing from
    ``root``, as its path below ``top`` (where the archive was extracted, or the folder itself): an extraction
    is a temporary folder nobody has seen, and the archive's member names are what a user can check."""
    missing = [(root / name).relative_to(top).as_posix() for name in expected_files(spec)
               if not (root / name).is_file()]
    if not missing:
        return
    if source.is_dir():
        raise FormatError(f"{', '.join(missing)} not found (a {spec_title(spec)} python folder holds "
                          f"{contents_listing(spec)})", path=source)
    raise FormatError(f"no member{'s' if len(missing) > 1 else ''} {', '.join(missing)} (a {spec_title(spec)} "
                      f"python archive holds {contents_listing(spec)})", path=source)


class DecodeCifar(ArtifactTask):
    """Reads one source (``data``): the official archive, a copy of it, or the folder it extracts to."""

    stage = "decode"
    version = 2
    reads = (RAW_DATA,)
    provides = "decoded"

    variant = luigi.ChoiceParameter(choices=sorted(SPECS), description="which CIFAR: cifar10 or cifar100")
    label_mode = luigi.ChoiceParameter(choices=["fine", "coarse"], default="fine",
                                       description="CIFAR-100: train on the 100 fine or the 20 coarse labels")
    workers = luigi.IntParameter(default=2, significant=False, description="threads decoding batch files")

    @property
    def spec(self) -> CifarSpec:
        return SPECS[self.variant]

    def build(self, out_dir: Path) -> dict[str, Any]:
        spec = self.spec
        scratch = out_dir / EXTRACT_SCRATCH_DIR
        data = downloaded_path(self.upstream_task(RAW_DATA))
        top = extract_if_archive(data, scratch)
        root = resolve_root(top, spec)
        check_complete(data, top, root, spec)
        class_names = read_label_names(root / spec.meta_file, spec.label_names_key)
        if len(class_names) != spec.num_classes:
            raise ValueError(f"{root / spec.meta_file}: {len(class_names)} label names, expected {spec.num_classes}")
        coarse = self.use_coarse(spec)
        if spec.coarse_label_names_key:
            coarse_names = read_label_names(root / spec.meta_file, spec.coarse_label_names_key)
            (out_dir / COARSE_LABELS_FILE).write_text("".join(f"{i}:{n}\n" for i, n in enumerate(coarse_names)))
            if coarse:
                class_names = coarse_names
        counts = {split: self._decode_split(root, spec, split, out_dir, coarse) for split in ("train", "test")}
        shutil.rmtree(scratch, ignore_errors=True)
        save_class_names(out_dir, class_names)
        DatasetInfo(spec.name, (32, 32, 3), len(class_names), 1,
                    {split: SplitInfo(count) for split, count in counts.items()}).save(out_dir)
        return {"records": counts}

    def use_coarse(self, spec: CifarSpec) -> bool:
        if self.label_mode == "coarse" and not spec.coarse_label_key:
            raise ValueError(f"{spec.name} has no coarse labels; label_mode=coarse is for cifar100")
        return self.label_mode == "coarse"

    def _decode_split(self, root: Path, spec: CifarSpec, split: str, out_dir: Path, coarse: bool) -> int:
        batches = spec.batches(split)
        with open_split_writer(out_dir, split, (32, 32, 3), num_heads=1) as writer:
            paths = split_batch_paths(root, spec, split)
            for done, (name, batch) in enumerate(iter_batches(paths, spec, workers=self.workers), start=1):
                keys = encode_keys([f"{split}/{name}/{i:05d}" for i in range(len(batch.labels))])
                labels = batch.labels
                if coarse:
                    assert batch.coarse_labels is not None, "use_coarse: the spec has coarse labels"
                    labels = batch.coarse_labels
                writer.append(image=batch.images, label=labels, key=keys)
                self.report_progress(done, len(batches), f"{split}: {name}")
        return writer.rows
