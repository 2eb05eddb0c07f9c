"""Download stage: fetch a URL or copy a local file into the store, verified against a pinned digest.

A local *directory* is not copied: the artifact records its path and content fingerprint, and
downstream stages read it in place (a user's 20 GB folder should not be duplicated).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlparse

import luigi

from tasks.store.task import ArtifactTask


def is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https", "file")


def is_remote(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def local_path(source: str) -> Path:
    parsed = urlparse(source)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(source)


def source_filename(source: str) -> str:
    name = Path(unquote(urlparse(source).path)).name if is_url(source) else Path(source).name
    if not name:
        raise ValueError(f"cannot tell a file name from source {source!r}; set Download.filename")
    return name


def content_fingerprint(path: Path, artifact_root: Path) -> str:
    """sha256 of a local file's or directory's contents, the artifact root left out (a user may run tfpipe
    inside their data folder); per-file digests are cached by stat, so an unchanged folder costs stat calls."""
    from tasks.sources.fingerprint import fingerprint_path, stat_cache_path

    return fingerprint_path(path, cache_file=stat_cache_path(artifact_root), exclude=[artifact_root])


# What a source task provides (a download, or data made locally such as captchas), and the role under which a
# dataset's single source reaches its decode task. The role is part of the decode stage's key.
RAW_DATA = "data"


class Download(ArtifactTask):
    """``source`` is http(s)://, file:// or a path; ``checksum`` is ``sha256:<hex>`` or ``md5:<hex>``."""

    stage = "download"
    version = 1
    # The key covers the data by its digest: the pinned checksum, or the fingerprint of a local source.
    unkeyed_params: ClassVar[frozenset[str]] = ArtifactTask.unkeyed_params | {"source", "checksum"}
    provides = RAW_DATA

    source = luigi.Parameter()
    checksum = luigi.Parameter(default="")
    filename = luigi.Parameter(default="")
    timeout_s = luigi.FloatParameter(default=60.0, significant=False)

    def source_fingerprints(self) -> dict[str, str]:
        if self.checksum:
            return {"checksum": self.checksum}
        if is_remote(self.source):
            raise ValueError(
                f"{self.source}: a URL needs a pinned checksum (--checksum sha256:<hex>), "
                "so that its artifact can be keyed and a changed file detected"
            )
        path = local_path(self.source)
        if not path.exists():
            raise FileNotFoundError(f"source {self.source!r} does not exist")
        return {"content": content_fingerprint(path, self.artifact_root)}

    def is_local_directory(self) -> bool:
        return not is_remote(self.source) and local_path(self.source).is_dir()

    def build(self, out_dir: Path) -> dict[str, Any]:
        from tasks.sources.fetch import Digest, fetch

        if self.is_local_directory():
            return {"data_path": str(local_path(self.source).resolve()), "in_place": True}
        name = self.filename or source_filename(self.source)
        digest = Digest.parse(self.checksum) if self.checksum else None
        partial_dir = self.artifact_root / self.stage / ".partial"
        partial_dir.mkdir(parents=True, exist_ok=True)
        # Partial downloads live outside the temporary build directory so a killed run can resume them.
        staged = partial_dir / f"{self.artifact_key}-{name}"
        progress, bar = self._progress_callback(name)
        try:
            fetch(self.source, staged, digest=digest, progress=progress, timeout=self.timeout_s)
        finally:
            bar.close()
        os.replace(staged, out_dir / name)
        return {"data_file": name, "bytes": (out_dir / name).stat().st_size}

    def _progress_callback(self, name: str):  # noqa: ANN202 - (callback for fetch(), its tqdm bar)
        from tqdm import tqdm

        bar = tqdm(desc=f"download {name}", unit="B", unit_scale=True, leave=False)

        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()
            if total:
                self.report_progress(done, total, f"download {name}: {done >> 20}/{total >> 20} MiB")

        return progress, bar


def downloaded_path(task: ArtifactTask) -> Path:
    """Where a finished Download's data is: the fetched file, or the user's directory in place."""
    manifest = task.output().manifest()
    if manifest.get("in_place"):
        return Path(manifest["data_path"])
    return task.local_artifact() / manifest["data_file"]
