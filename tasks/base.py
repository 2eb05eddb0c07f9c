"""The one Luigi base class every tfpipe task uses: keyed artifact directory, atomic build, progress."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import luigi
from luigi.task import flatten

from tasks import store

logger = logging.getLogger("tfpipe")
T = TypeVar("T")


class ArtifactStore(luigi.Config):
    """Where artifacts live: ``[ArtifactStore] root`` in luigi.cfg or ``tfpipe run --artifacts``."""

    root = luigi.Parameter(default="artifacts")


class ArtifactTarget(luigi.Target):
    """Exists only when the directory holds a valid manifest for exactly this key."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = Path(path)
        self.key = key

    def exists(self) -> bool:
        return store.is_valid_artifact(self.path, self.key)

    def manifest(self) -> dict[str, Any]:
        manifest = store.read_manifest(self.path)
        if manifest is None:
            raise FileNotFoundError(f"{self.path}: no {store.MANIFEST_NAME}; the stage has not run")
        return manifest


class ArtifactTask(luigi.Task):
    """Base of every stage. Subclasses set ``stage`` and ``version`` and implement ``build(out_dir)``.

    ``build`` writes into a temporary directory and returns nothing or a dict of manifest fields (record
    counts, metrics); the base class writes ``MANIFEST.json`` and renames the directory into place.
    """

    stage: ClassVar[str] = "misc"
    version: ClassVar[int] = 1
    # Parameters that name where data comes from (passed down the chain to build upstream tasks) but
    # are covered by an upstream key or a source fingerprint, so they stay out of this task's key.
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"source", "checksum"})

    # ---- identity ------------------------------------------------------------------------------------
    def significant_params(self) -> dict[str, str]:
        return {
            name: param.serialize(getattr(self, name))
            for name, param in self.get_params()
            if param.significant and name not in self.unkeyed_params
        }

    def source_fingerprints(self) -> dict[str, str]:
        """Digests of data read from outside the store (files, URLs); override in source tasks."""
        return {}

    def upstream_keys(self) -> dict[str, str]:
        keys = {f"source:{name}": digest for name, digest in self.source_fingerprints().items()}
        for task in flatten(self.requires()):
            if isinstance(task, ArtifactTask):
                keys[task.task_family] = task.artifact_key
        return keys

    @property
    def identity(self) -> store.ArtifactIdentity:
        # Not cached on the instance: Luigi reuses task instances with equal parameters within a process,
        # while an upstream task's configured defaults may have changed (``--set`` in a second run).
        params = self.significant_params()
        upstream = self.upstream_keys()
        key = store.artifact_key(self.task_family, params, self.version, upstream)
        return store.ArtifactIdentity(self.task_family, self.stage, key, self.version, params, upstream)

    @property
    def artifact_key(self) -> str:
        return self.identity.key

    @property
    def artifact_root(self) -> Path:
        return Path(ArtifactStore().root)

    @property
    def artifact_dir(self) -> Path:
        return self.identity.directory(self.artifact_root)

    def output(self) -> ArtifactTarget:
        return ArtifactTarget(self.artifact_dir, self.artifact_key)

    # ---- running -------------------------------------------------------------------------------------
    def build(self, out_dir: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    def run(self) -> None:
        started = time.time()
        with store.building(self.artifact_root, self.identity) as (temp_dir, extra):
            result = self.build(temp_dir) or {}
            extra.update(result)
            extra["seconds"] = round(time.time() - started, 3)
        self.report_progress(1, 1, f"done: {self.artifact_dir}")
        logger.info("%s committed %s", self.task_family, self.artifact_dir)

    # ---- helpers for subclasses ------------------------------------------------------------------------
    def input_dir(self, name: str | None = None) -> Path:
        """Directory of an upstream artifact: the single requirement, or the one under ``name``."""
        required = self.requires()
        task = required[name] if name is not None else required
        return task.artifact_dir

    def report_progress(self, done: int, total: int, message: str = "") -> None:
        """Tell the Luigi scheduler how far we are (visible in luigid's UI)."""
        percent = 100 if total <= 0 else int(100 * done / total)
        # Outside a Luigi worker (a plain ``build`` call in tests) the callbacks are None.
        if callable(self.set_progress_percentage):
            self.set_progress_percentage(percent)
        if message and callable(self.set_status_message):
            self.set_status_message(message)

    def track(self, items: Iterable[T], total: int, description: str) -> Iterator[T]:
        """Iterate with a tqdm bar and Luigi progress updates (throttled to 1 % steps)."""
        from tqdm import tqdm

        last_percent = -1
        with tqdm(total=total, desc=f"{self.task_family}: {description}", unit="it", leave=False) as bar:
            for done, item in enumerate(items, start=1):
                yield item
                bar.update(1)
                percent = int(100 * done / max(total, 1))
                if percent != last_percent:
                    last_percent = percent
                    self.report_progress(done, total, f"{description} {done}/{total}")
