"""The one Luigi base class every tfpipe task uses: keyed artifact directory, atomic build, progress."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import luigi
import luigi.configuration
from luigi.freezing import FrozenOrderedDict

from tasks.store import artifacts as store
from tasks.store.opened import OpenRoot, open_root

if TYPE_CHECKING:
    from tasks.store.mirror import BucketArtifacts

logger = logging.getLogger("tfpipe")
T = TypeVar("T")


class ArtifactStore(luigi.Config):
    """Where artifacts live: ``[ArtifactStore] root`` in luigi.cfg or ``tfpipe run --artifacts``: a folder, or
    ``s3://bucket/prefix`` (tasks/store/roots.py)."""

    root = luigi.Parameter(default="artifacts")
    cache = luigi.Parameter(default="", description="this host's mirror of a bucket root's artifacts ('' = "
                                                    "$XDG_CACHE_HOME/tfpipe or ~/.cache/tfpipe)")
    cache_max_gb = luigi.FloatParameter(default=50.0, description="the mirror's size bound: least recently used "
                                                                  "artifacts beyond it are removed")


def opened_root() -> OpenRoot:
    """The artifact root of this process's configuration, opened (a bucket connects on first use)."""
    config = ArtifactStore()
    return open_root(config.root, config.cache, config.cache_max_gb)


class BucketArtifactTarget(luigi.Target):
    """Exists only when the bucket holds a committed manifest for exactly this key (one request)."""

    def __init__(self, artifacts: BucketArtifacts, identity: store.ArtifactIdentity) -> None:
        self.artifacts = artifacts
        self.identity = identity

    def exists(self) -> bool:
        return self.artifacts.manifest(self.identity) is not None

    def manifest(self) -> dict[str, Any]:
        manifest = self.artifacts.manifest(self.identity)
        if manifest is None:
            raise FileNotFoundError(f"{self.artifacts.url(self.identity)}: no {store.MANIFEST_NAME}; "
                                    "the stage has not run")
        return manifest


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


if TYPE_CHECKING:
    # What a task reads as ``self.upstream``. Luigi's typed releases make Parameter generic; the subscript stays
    # out of the running code, which supports older ones too.
    _UpstreamBase = luigi.Parameter[Mapping[str, luigi.Task]]
else:
    _UpstreamBase = luigi.Parameter


class UpstreamParameter(_UpstreamBase):
    """The artifacts a task reads, as ``{role: task instance}``, handed to it by the pipeline's stage chain.

    gokart's ``TaskInstanceParameter`` as a mapping: a stage never names another stage's class. The value
    serializes to the upstream task ids (so Luigi's task id, and the central scheduler, tell two chains
    apart); the artifact key uses the upstream *artifact keys* by role instead (``ArtifactTask.upstream_keys``).
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default", {})
        kwargs.setdefault("description", "upstream tasks by role (set by the pipeline, not on the command line)")
        super().__init__(**kwargs)

    def normalize(self, x: Mapping[str, luigi.Task]) -> FrozenOrderedDict:
        if not isinstance(x, Mapping):
            raise ValueError(f"upstream must be a mapping of role -> task, got {type(x).__name__}")
        for role, task in x.items():
            if not isinstance(task, luigi.Task):
                raise ValueError(f"upstream role {role!r} must be a task instance, got {type(task).__name__}")
        return FrozenOrderedDict(sorted(x.items()))

    def serialize(self, x: Mapping[str, luigi.Task]) -> str:
        return json.dumps({role: task.task_id for role, task in x.items()}, sort_keys=True)

    def parse(self, x: str) -> FrozenOrderedDict:
        raise ValueError("upstream tasks come from the pipeline's stage chain; they cannot be given as text")

    def _warn_on_wrong_param_type(self, param_name: str, param_value: object) -> None:
        return None


class ArtifactTask(luigi.Task):
    """Base of every stage. Subclasses set ``stage`` and ``version`` and implement ``build(out_dir)``.

    ``build`` writes into a temporary directory and returns nothing or a dict of manifest fields (record
    counts, metrics); the base class writes ``MANIFEST.json`` and renames the directory into place.
    """

    stage: ClassVar[str] = "misc"
    version: ClassVar[int] = 1
    # Parameters covered by an upstream key or a source fingerprint, so they stay out of this task's key.
    unkeyed_params: ClassVar[frozenset[str]] = frozenset({"upstream"})
    # The kinds of artifact this task reads (roles of ``upstream``), resolved by the pipeline's stage chain,
    # and the kind it provides to the stages after it.
    reads: ClassVar[tuple[str, ...]] = ()
    # Kinds read when an earlier stage provides them (an optional stage switched on), else not.
    optional_reads: ClassVar[tuple[str, ...]] = ()
    provides: ClassVar[str] = ""

    upstream = UpstreamParameter()

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

    def requires(self) -> dict[str, luigi.Task]:
        # A plain dict: luigi.task.flatten walks the values of dicts only, not of other mappings.
        missing = [role for role in self.reads if role not in self.upstream]
        if missing:
            raise ValueError(f"{self.task_family} reads {', '.join(missing)}, which its pipeline does not provide")
        return dict(self.upstream)

    def upstream_keys(self) -> dict[str, str]:
        """Source fingerprints and the keys of the artifacts read, each under its role."""
        keys = {f"source:{name}": digest for name, digest in self.source_fingerprints().items()}
        for role, task in self.upstream.items():
            if isinstance(task, ArtifactTask):
                keys[role] = task.artifact_key
        return keys

    @property
    def identity(self) -> store.ArtifactIdentity:
        # Computed once per instance: a run sees one fingerprint of its sources, even if they change while it
        # runs. Luigi reuses instances with equal parameters within a process, so a caller that starts another
        # run in the same process clears Luigi's instance cache first (``tfpipe`` does).
        cached = self.__dict__.get("_identity")
        if cached is None:
            params = self.significant_params()
            upstream = self.upstream_keys()
            key = store.artifact_key(self.task_family, params, self.version, upstream)
            cached = store.ArtifactIdentity(self.task_family, self.stage, key, self.version, params, upstream)
            self.__dict__["_identity"] = cached
        return cached

    @property
    def artifact_key(self) -> str:
        return self.identity.key

    @property
    def artifact_root(self) -> Path:
        """This host's folder of the root: the root itself, or a bucket root's local mirror."""
        return opened_root().local

    @property
    def artifact_dir(self) -> Path:
        """This artifact's folder on this host (on a bucket root: in the mirror, see `local_artifact`)."""
        return self.identity.directory(self.artifact_root)

    @property
    def artifact_location(self) -> str:
        """Where the artifact lives, for people: its folder, or its URL on the bucket."""
        artifacts = opened_root().artifacts
        return str(self.artifact_dir) if artifacts is None else artifacts.url(self.identity)

    def output(self) -> ArtifactTarget | BucketArtifactTarget:
        artifacts = opened_root().artifacts
        if artifacts is not None:
            return BucketArtifactTarget(artifacts, self.identity)
        return ArtifactTarget(self.artifact_dir, self.artifact_key)

    def local_artifact(self) -> Path:
        """The finished artifact's folder on this host: pulled from the bucket (verified) first when the root is
        one. A stage reads its inputs through this (`input_dir`)."""
        artifacts = opened_root().artifacts
        return self.artifact_dir if artifacts is None else artifacts.pull(self.identity)

    # ---- running -------------------------------------------------------------------------------------
    def build(self, out_dir: Path) -> dict[str, Any] | None:
        raise NotImplementedError

    def run(self) -> None:
        # Another tfpipe process on this root (a second local scheduler) may be building this very artifact: wait
        # for it and keep its result, rather than build (download, train) the same thing beside it.
        with store.build_lock(self.artifact_root, self.identity):
            if self.output().exists():
                logger.info("%s: %s was built by another process meanwhile", self.task_family,
                            self.artifact_location)
                return
            artifacts = opened_root().artifacts
            # On a bucket a build is committed in the mirror, then pushed; a build a killed run committed in the
            # mirror but never pushed is pushed as it is.
            if artifacts is None or not store.is_valid_artifact(self.artifact_dir, self.artifact_key):
                self.build_and_commit()
            if artifacts is not None:
                self.report_progress(1, 1, f"uploading to {self.artifact_location}")
                artifacts.push(self.identity, self.artifact_dir)
                logger.info("%s committed %s", self.task_family, self.artifact_location)

    def build_and_commit(self) -> None:
        started = time.time()
        with store.building(self.artifact_root, self.identity) as (temp_dir, extra):
            result = self.build(temp_dir) or {}
            extra.update(result)
            extra["seconds"] = round(time.time() - started, 3)
        self.report_progress(1, 1, f"done: {self.artifact_dir}")
        logger.info("%s committed %s", self.task_family, self.artifact_dir)

    # ---- helpers for subclasses ------------------------------------------------------------------------
    def input_dir(self, role: str) -> Path:
        """Directory of the upstream artifact read under ``role``, on this host."""
        return self.upstream_task(role).local_artifact()

    def input_manifest(self, role: str) -> dict[str, Any]:
        return self.upstream_task(role).output().manifest()

    def upstream_task(self, role: str) -> ArtifactTask:
        """The task read under ``role``: an artifact task, as every stage the pipeline chains is."""
        task = self.requires()[role]
        if not isinstance(task, ArtifactTask):
            raise TypeError(f"{self.task_family}: upstream {role!r} is a {type(task).__name__}, not an ArtifactTask")
        return task

    def report_progress(self, done: int, total: int, message: str = "") -> None:
        """Tell the Luigi scheduler how far we are (visible in luigid's UI)."""
        percent = 100 if total <= 0 else int(100 * done / total)
        # Outside a Luigi worker (a plain ``build`` call in tests) the callbacks are None.
        if callable(self.set_progress_percentage):
            self.set_progress_percentage(percent)
        if message:
            self.show_status(message)

    def show_status(self, message: str) -> None:
        """The task's status line in the scheduler's UI (a no-op outside a Luigi worker)."""
        if callable(self.set_status_message):
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


# With ``[worker] keep_alive`` (luigi.cfg) a Luigi worker waits for tasks whose resources are taken, instead of
# leaving them unrun and exiting 0. But it also waits forever on the dependents of a task that failed (the
# scheduler keeps them pending for a retry). So a failure here sends the worker the signal Luigi itself uses to
# stop asking for work (SIGUSR1): the tasks already running finish, and the run ends with the failure.
_LUIGI_WORKER_PID = os.getpid()  # the process that imported the tasks: the Luigi worker (task processes fork)


@ArtifactTask.event_handler(luigi.Event.FAILURE)
def _stop_keep_alive_worker_on_failure(task: luigi.Task, error: BaseException) -> None:
    if not luigi.configuration.get_config().getboolean("worker", "keep_alive", False):
        return
    if callable(signal.getsignal(signal.SIGUSR1)):  # Luigi's handler is installed (else the signal would kill)
        os.kill(_LUIGI_WORKER_PID, signal.SIGUSR1)
