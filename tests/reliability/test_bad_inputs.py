"""Reliability: bad inputs (issue 13, item 2). Every kind of broken source a user can hand tfpipe is refused
the way the README promises: the run exits with ``[retcode] task_failed``, prints one ``tfpipe:`` line that
names the bad file (and what is wrong with it) and no traceback, and commits nothing for the stage that
refused it; a run after the source is repaired then succeeds.

* ``test_bad_source_is_refused_by_name``: the catalogue of ``bad_sources.py`` (pickles that run code or
  declare a terabyte, truncated archives and archives that escape, IDX/GNT headers that lie, corrupt
  images, broken ``labels.csv``...) through the real CLI in a subprocess, one per scenario. One or two per
  pipeline run in the default suite; the whole catalogue with ``-m slow`` / ``-m reliability``.
* ``test_corrupt_images_are_skipped_and_listed``: ``DecodeImages.on_error=skip`` keeps the good images and
  lists every bad one with its reason.
* Codec-level checks of the same promises at the functions the stages call, for the cases whose fix this
  suite brought (``safe_pickle`` length fields, ``captcha_csv``) and for every image format's truncation.

Each CLI scenario is logged through ``figures("bad_input", outcome, ...)``: ``refused`` (as promised),
``traceback``, ``accepted`` (exit 0) or ``wrong_refusal`` (failed, but not as promised).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import cli
from pipelines.commands.common import set_config
from pipelines.registry import DATASETS, get_dataset
from tasks.datasets.captcha.labels_csv import read_labels_csv
from tasks.datasets.images.folder import load_image
from tasks.formats.errors import FormatError
from tasks.formats.safe_pickle import load_restricted
from tests.conftest import isolated_luigi_config
from tests.reliability.bad_sources import (
    BAD_SOURCES,
    CAPTCHA_ALPHABET,
    TERABYTE,
    BadSource,
    captcha_folder,
    cifar_archive,
    cifar_folder,
    hwdb_folder,
    image_folder,
    mnist_folder,
    png_declaring,
    truncate,
)
from tests.reliability.bad_surfaces import (
    BAD_SURFACES,
    PREDICT_IMAGES,
    BadSurface,
    Env,
    ScriptedServer,
    dead_port,
    download_routes,
    markdown_table,
)

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 240  # one tiny decode; generous for a loaded 2-core machine
TASK_FAILED = 30  # [retcode] task_failed in luigi.cfg
USAGE_ERROR = 2  # cli.main's exit status for an expected error raised before Luigi starts


# ---- running the CLI ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def tfpipe_lines(self) -> list[str]:
        """What tfpipe itself says on stderr (Luigi's own log lines and summary excluded)."""
        return [line for line in self.stderr.splitlines() if line.startswith("tfpipe: ")]


def run_tfpipe(*args: str) -> Run:
    """``python -m pipelines.cli ARGS`` in a fresh process (Luigi's logging set up as a user gets it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("LUIGI_CONFIG_PATH", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, errors="replace", timeout=RUN_TIMEOUT_S, check=False)
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def run_until(stage: str, pipeline: str, source: Path, root: Path, *extra: str) -> Run:
    return run_tfpipe("run", pipeline, "--source", str(source), "--until", stage, "--artifacts", str(root), *extra)


def files_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def committed(root: Path, stage: str) -> list[Path]:
    return sorted(p.parent for p in (root / stage).glob("*/MANIFEST.json"))


def last_recorded_run(root: Path, pipeline: str) -> dict[str, object]:
    lines = (root / "runs" / f"{pipeline}.jsonl").read_text().splitlines()
    return json.loads(lines[-1])


def outcome_of(run: Run, bad: BadSource) -> str:
    """How the run ended, for the figures: as promised, or which promise it broke."""
    if run.code == 0:
        return "accepted"
    if "Traceback" in run.stderr:
        return "traceback"
    [line, *others] = run.tfpipe_lines or [""]
    if run.code == TASK_FAILED and not others and bad.names in line and f"{bad.error}: " in run.stderr:
        return "refused"
    return "wrong_refusal"


def assert_refused_by_name(run: Run, bad: BadSource, root: Path) -> None:
    """The README's promise for an expected error, checked piece by piece so a failure says which broke."""
    assert run.code == TASK_FAILED, f"exit {run.code}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    assert "Traceback" not in run.stderr, run.stderr[-4000:]
    assert len(run.tfpipe_lines) == 1, run.stderr[-3000:]
    [line] = run.tfpipe_lines
    assert bad.names in line, line
    assert re.search(bad.message, line), f"{bad.message!r} not in {line!r}"
    # Luigi's error line (traceback removed by the CLI) names the error's class: the kind of bad input
    assert f"{bad.error}: " in run.stderr, run.stderr[-3000:]
    # nothing of the refusing stage is left: no committed artifact, no temporary build directory, no file
    assert files_below(root / bad.stage) == [], files_below(root / bad.stage)
    record = last_recorded_run(root, bad.pipeline)
    assert record["exit_code"] == TASK_FAILED and bad.stage not in record["stages_ran"], record


def marks_of(bad: BadSource) -> list[pytest.MarkDecorator]:
    marks = [] if bad.fast else [pytest.mark.slow]
    if bad.known_bug:  # strict: the day the bug is fixed this test fails, asking for the mark to go
        marks.append(pytest.mark.xfail(strict=True, reason=f"product bug: {bad.known_bug}"))
    return marks


def bad_source_params() -> list[object]:
    return [pytest.param(bad, id=bad.id, marks=marks_of(bad)) for bad in BAD_SOURCES]


# ---- the catalogue through the CLI ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", bad_source_params())
def test_bad_source_is_refused_by_name(bad: BadSource, tmp_path: Path, figures: Callable[..., None]) -> None:
    source = bad.make(tmp_path)
    root = tmp_path / "artifacts"
    run = run_until("decode", bad.pipeline, source, root, *bad.extra_args)
    outcome = outcome_of(run, bad)
    figures("bad_input", outcome, pipeline=bad.pipeline, case=bad.case, error=bad.error, exit_code=run.code,
            seconds=round(run.seconds, 2), message=(run.tfpipe_lines or [""])[0][:300])
    assert_refused_by_name(run, bad, root)


# A repaired source runs: the refusal left nothing behind that poisons the next run. One case per pipeline;
# each REPAIRS entry rewrites the same --source path with good data.
REPAIRS: dict[str, Callable[[Path], Path]] = {
    "cifar10-archive-truncated": lambda d: cifar_archive(d / "src"),
    "cifar10-pickle-runs-code": lambda d: cifar_folder(d / "src"),
    "mnist-images-truncated": lambda d: mnist_folder(d / "src"),
    "hwdb-bitmap-truncated": lambda d: hwdb_folder(d / "src"),
    "images-jpeg-truncated": lambda d: image_folder(d / "photos"),
    "captcha-label-outside-alphabet": lambda d: captcha_folder(d / "captchas"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(REPAIRS))
def test_repaired_source_runs_after_a_refusal(case: str, tmp_path: Path, figures: Callable[..., None]) -> None:
    [bad] = [b for b in BAD_SOURCES if b.id == case]
    source = bad.make(tmp_path)
    root = tmp_path / "artifacts"
    refused = run_until("decode", bad.pipeline, source, root)
    assert_refused_by_name(refused, bad, root)
    for made in ("src", "photos", "captchas"):  # the folders the makers of bad_sources.py write into
        shutil.rmtree(tmp_path / made, ignore_errors=True)
    assert REPAIRS[case](tmp_path) == source
    repaired = run_until("decode", bad.pipeline, source, root)
    figures("bad_input", "recovered" if repaired.code == 0 else "stuck", pipeline=bad.pipeline, case=case,
            exit_code=repaired.code, seconds=round(repaired.seconds, 2))
    assert repaired.code == 0, repaired.stderr[-3000:]
    [decoded] = committed(root, "decode")
    manifest = json.loads((decoded / "MANIFEST.json").read_text())
    assert sum(manifest["records"].values()) > 0, manifest
    assert last_recorded_run(root, bad.pipeline)["exit_code"] == 0


# ---- on_error=skip: keep the good images, list the bad ------------------------------------------------
def write_bad_images(folder: Path) -> dict[str, str]:
    """One broken file of each kind in ``folder``; returns relpath (from the class root) -> reason fragment."""
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 30, 30)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (30, 30, 200)).save(buffer, "WEBP")
    webp = buffer.getvalue()
    broken = {
        "cut.jpg": (jpeg[: len(jpeg) // 2], "corrupt or truncated image"),
        "empty.png": (b"", "empty file (0 bytes)"),
        "page.jpg": (b"<html>404</html>", "not an image in a supported format"),
        "bomb.png": (png_declaring(60_000, 60_000), "image too large to decode safely"),
        "cut.webp": (webp[: len(webp) // 2], "corrupt or truncated image"),
    }
    for name, (data, _) in broken.items():
        (folder / name).write_bytes(data)
    return {f"{folder.name}/{name}": reason for name, (_, reason) in broken.items()}


def test_corrupt_images_are_skipped_and_listed(tmp_path: Path, figures: Callable[..., None]) -> None:
    photos = image_folder(tmp_path / "photos")  # 4 circles, 4 squares
    expected = write_bad_images(photos / "squares")
    root = tmp_path / "artifacts"
    run = run_until("decode", "images", photos, root, "--set", "DecodeImages.on_error=skip")
    figures("bad_input", "skipped" if run.code == 0 else "crash", pipeline="images", case="on-error-skip",
            bad_files=len(expected), exit_code=run.code, seconds=round(run.seconds, 2))
    assert run.code == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    [decoded] = committed(root, "decode")
    skipped = json.loads((decoded / "skipped.json").read_text())
    listed = {entry["path"]: entry["reason"] for entry in skipped["bad_images"]}
    assert sorted(listed) == sorted(expected)
    for path, fragment in expected.items():
        assert fragment in listed[path], (path, listed[path])
    manifest = json.loads((decoded / "MANIFEST.json").read_text())
    assert sum(manifest["records"].values()) == 8 and manifest["bad_images_skipped"] == 5
    assert f"{len(expected)} corrupt image(s) skipped (on_error=skip)" in run.stdout


def test_a_class_of_only_corrupt_images_leaves_too_few_classes(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos")
    for path in (photos / "squares").iterdir():
        truncate(path, 0.3)
    root = tmp_path / "artifacts"
    run = run_until("decode", "images", photos, root, "--set", "DecodeImages.on_error=skip")
    assert run.code == TASK_FAILED and "Traceback" not in run.stderr, run.stderr[-3000:]
    [line] = run.tfpipe_lines
    assert "fewer than 2 classes with readable images" in line and str(photos) in line
    assert files_below(root / "decode") == []


# ---- refused before Luigi starts -------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "fragment"), [
    ("{tmp}/nowhere/cifar-10-python.tar.gz", "does not exist"),
    ("http://127.0.0.1:9/cifar-10-python.tar.gz", "needs a pinned checksum"),
], ids=["missing-path", "unpinned-url"])
def test_a_source_that_cannot_be_fingerprinted_is_refused_in_one_line(
        source: str, fragment: str, tmp_path: Path, luigi_config: object, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "artifacts"
    code = cli.main(["run", "cifar10", "--source", source.format(tmp=tmp_path), "--until", "decode",
                     "--artifacts", str(root)])
    err = capsys.readouterr().err
    assert code == USAGE_ERROR
    [line] = err.strip().splitlines()
    assert line.startswith("tfpipe: error: ") and fragment in line, line
    assert not (root / "download").exists() and not (root / "decode").exists()


# ---- codec level: the cases fixed with this suite, and every image format's truncation ------------------
@pytest.mark.parametrize("opcode", [b"\x8e", b"\x8d", b"\x96", b"\x95"],
                         ids=["BINBYTES8", "BINUNICODE8", "BYTEARRAY8", "FRAME"])
def test_a_pickle_length_field_asking_for_a_terabyte_is_a_format_error(opcode: bytes, tmp_path: Path) -> None:
    """Refused by the opcode walk before the unpickler allocates what the field declares."""
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x05" + opcode + struct.pack("<Q", TERABYTE) + b"abc")
    declares = f"a {TERABYTE}-byte frame" if opcode == b"\x95" else f"{TERABYTE} bytes"
    with pytest.raises(FormatError, match=rf"^{path}, byte offset 2: truncated or malformed pickle: \w+: "
                                          rf"it declares {declares}, 3"):
        load_restricted(path)


@pytest.mark.parametrize(("content", "pattern"), [
    (b"index,label\n0,ABCD\n1,AB\xc9D\n", r"labels\.csv, byte offset 23: not UTF-8 text"),
    ("index,label\n²,ABCD\n".encode(), r"labels\.csv, record 2: line 2: expected '<index>,<label>'"),
    ("index,label\n٣,ABCD\n".encode(), r"labels\.csv, record 2: line 2: expected '<index>,<label>'"),
    (b'index,label\n0,ABCD\n1,"' + b"A" * 200_000 + b'"\n', r"labels\.csv, record 3: line 3: not a valid CSV row"),
], ids=["latin-1-byte", "superscript-digit", "arabic-indic-digit", "field-over-csv-limit"])
def test_captcha_labels_csv_errors_name_the_file_and_place(content: bytes, pattern: str, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=pattern):
        read_labels_csv(path, alphabet=CAPTCHA_ALPHABET, length=4)


def test_good_captcha_labels_still_read(tmp_path: Path) -> None:
    path = captcha_folder(tmp_path / "c", count=3) / "labels.csv"
    rows = read_labels_csv(path, alphabet=CAPTCHA_ALPHABET, length=4)
    assert [index for index, _ in rows] == [0, 1, 2] and all(len(label) == 4 for _, label in rows)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9])
def test_every_truncation_of_every_image_format_is_a_format_error(fmt: str, keep: float, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    data = buffer.getvalue()
    path = tmp_path / f"image.{fmt.lower()}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(FormatError, match=rf"^{path}"):
        load_image(path, channels=3, size=16)


# ---- other inputs: downloads, --backbone, predict, --set, CLI arguments (bad_surfaces.py) --------------------
# Each case runs in process (cli.main, with capsys and caplog) unless it may hang (then a subprocess bounded by a
# timeout), and is checked as the --source catalogue is: exit code, one `tfpipe` line naming the input, no
# traceback, nothing committed for the refusing stage, nothing created or changed outside the artifact root.
TFPIPE_LINE = re.compile(r"^tfpipe(?: [a-z-]+)?: ")


@dataclass(frozen=True)
class Outcome:
    code: int | None  # None: no exit status (an exception escaped, or the run timed out)
    stdout: str
    stderr: str
    log: str  # Luigi's log records (in process; the subprocess's are on its stderr)
    escaped: str  # the traceback of an exception that escaped cli.main, or why the subprocess did not end
    seconds: float

    @property
    def tfpipe_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if TFPIPE_LINE.match(line)]


def point_luigi_logging_at_current_stderr() -> None:
    """Luigi sets up its stream handler once per process, bound to the sys.stderr of that moment: under pytest
    the capture stream of an earlier test, closed since (a "--- Logging error ---" on every record)."""
    for handler in logging.getLogger("luigi-interface").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.stream = sys.stderr  # not setStream(): it flushes the old, closed stream


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> Outcome:
    point_luigi_logging_at_current_stderr()
    started = time.monotonic()
    code: int | None = None
    escaped = ""
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse refusing an argument
        code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - a traceback is what the assertions then report
        escaped = traceback.format_exc()
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, caplog.text, escaped, time.monotonic() - started)


def run_in_subprocess(argv: list[str], cwd: Path, timeout_s: float) -> Outcome:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("LUIGI_CONFIG_PATH", None)
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=cwd, env=env, capture_output=True,
                              text=True, errors="replace", timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as expired:
        return Outcome(None, str(expired.stdout or ""), str(expired.stderr or ""), "",
                       f"still running after {timeout_s} s (killed)", time.monotonic() - started)
    return Outcome(done.returncode, done.stdout, done.stderr, done.stderr, "", time.monotonic() - started)


Snapshot = dict[str, tuple[int, int]]


def outside_root(base: Path, root: Path) -> Snapshot:
    """Every entry below ``base`` except the artifact root: files by (size, mtime_ns), folders by existence."""
    entries: Snapshot = {}
    for path in base.rglob("*"):
        if path == root or root in path.parents:
            continue
        info = path.lstat()
        entries[str(path)] = (-1, 0) if path.is_dir() and not path.is_symlink() else (info.st_size, info.st_mtime_ns)
    return entries


def repository_top() -> Snapshot:
    """The repository's top level and its default artifact root: a run must never write into the cwd."""
    top = {str(path): (0, 0) for path in REPO.iterdir()}
    return {**top, **outside_root(REPO / "artifacts", REPO / "no-root")} if (REPO / "artifacts").is_dir() else top


def manifests_below(root: Path) -> set[Path]:
    return set(root.rglob("MANIFEST.json")) if root.exists() else set()


@dataclass(frozen=True)
class Before:
    outside: Snapshot
    repository: Snapshot
    manifests: set[Path]


def expected_line_count(bad: BadSurface, skip_bad: bool) -> int:
    """Predict prints one line per bad file, and without --skip-bad one more saying nothing was predicted."""
    return 2 if bad in PREDICT_IMAGES and not skip_bad else 1


def assert_surface_refused(run: Outcome, bad: BadSurface, argv: list[str], env: Env, before: Before, base: Path,
                           skip_bad: bool) -> None:
    """The promise for a bad input, piece by piece, so that a failure says which piece broke."""
    assert not run.escaped, f"{run.escaped[-4000:]}\n{run.stderr[-2000:]}"
    assert run.code == bad.code, f"exit {run.code}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    for text in (run.stdout, run.stderr, run.log):
        assert "Traceback" not in text, text[-4000:]
    names = bad.expected_names(env)
    assert len(run.tfpipe_lines) == expected_line_count(bad, skip_bad), run.stderr[-3000:]
    [line] = [line for line in run.tfpipe_lines if names in line] or [f"(no tfpipe line names {names!r})"]
    assert names in line and re.search(bad.message, line), f"{bad.message!r} / {names!r} not in {line!r}"
    if bad.argparse:
        assert re.match(r"^tfpipe [a-z-]+: error: argument ", line), line
    elif bad.error == "usage":
        assert line.startswith("tfpipe: error: "), line
    if bad.code == TASK_FAILED:  # Luigi's error line (traceback removed by the CLI) names the error's class
        assert f"{bad.error}: " in run.log, run.log[-3000:]
    assert_predict_output(run, bad, env, skip_bad)
    assert_nothing_committed(bad, argv, env.root, before.manifests)
    assert outside_root(base, env.root) == before.outside, "a file outside the artifact root was written"
    assert repository_top() == before.repository, "the run wrote into the repository (the cwd)"


def assert_predict_output(run: Outcome, bad: BadSurface, env: Env, skip_bad: bool) -> None:
    """Without --skip-bad nothing is predicted; with it, the good image is (and only it)."""
    if bad.kind != "predict":
        return
    if not skip_bad:
        assert run.stdout.strip() == "", run.stdout
        if bad in PREDICT_IMAGES:
            assert "1 of 2 image(s) unreadable; nothing predicted" in run.stderr, run.stderr
        return
    [prediction] = run.stdout.strip().splitlines()  # the good image only, with its top-k labels
    assert prediction.startswith(f"{env.good_image}: ") and "(" in prediction, prediction


def assert_nothing_committed(bad: BadSurface, argv: list[str], root: Path, manifests_before: set[Path]) -> None:
    new = manifests_below(root) - manifests_before
    if not bad.stage:  # refused before Luigi started: no stage may have been built
        assert new == set(), sorted(new)
        return
    assert manifests_below(root / bad.stage) == set(), sorted(manifests_below(root / bad.stage))
    # Only a partial download may stay (fetch keeps `<name>.part` to resume it); no build directory, no file.
    leftovers = [p for p in files_below(root / bad.stage) if not (p.parent.name == ".partial" and p.suffix == ".part")]
    assert leftovers == [], leftovers
    pipeline = next(arg for arg in argv if arg in DATASETS)
    record = last_recorded_run(root, pipeline)
    assert record["exit_code"] == bad.code and bad.stage not in record["stages_ran"], record


def surface_params() -> list[object]:
    params = []
    for bad in BAD_SURFACES:
        marks = [] if bad.fast else [pytest.mark.slow]
        if bad.known_bug:  # strict: the day the bug is fixed this test fails, asking for the mark to go
            marks.append(pytest.mark.xfail(strict=True, reason=f"product bug: {bad.known_bug}"))
        params.append(pytest.param(bad, False, id=bad.id, marks=marks))
        if bad in PREDICT_IMAGES:
            params.append(pytest.param(bad, True, id=f"{bad.id}-skip-bad", marks=marks))
    return params


# ---- what the cases run against (module-scoped: built once) ----------------------------------------------
@pytest.fixture(scope="module")
def download_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    archive = cifar_archive(tmp_path_factory.mktemp("www") / "fake")
    with ScriptedServer(download_routes(archive.read_bytes())) as server:
        yield server.url


@pytest.fixture(scope="module")
def module_captchas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return captcha_folder(tmp_path_factory.mktemp("captcha-src") / "captchas")


@pytest.fixture(scope="module")
def module_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return image_folder(tmp_path_factory.mktemp("photo-src") / "photos")


@pytest.fixture(scope="module")
def sharded_root(module_photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root holding the photos' stages up to tfrecords: a backbone case then runs bottleneck alone."""
    root = tmp_path_factory.mktemp("sharded") / "artifacts"
    with isolated_luigi_config(root):
        code = cli.main(["run", "images", "--source", str(module_photos), "--until", "tfrecords", "--artifacts",
                         str(root), "--set", "DecodeImages.image_size=32"])
    assert code == 0 and committed(root, "tfrecords"), f"preparing the shards failed ({code})"
    return root


@pytest.fixture(scope="module")
def frozen_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny exported classifier (what the freeze stage writes) and one PNG it predicts."""
    import keras

    from tasks.export.freeze import export_serving_model

    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    folder = tmp_path_factory.mktemp("frozen")
    export_serving_model(model, folder / "model", image_shape=(8, 8, 3), class_names=["ant", "bee", "cat"])
    good = folder / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(good)
    return folder / "model", good


def env_for(bad: BadSurface, tmp_path: Path, request: pytest.FixtureRequest, dead: str) -> Env:
    """The Env a case's kind needs, building only the fixtures it uses (TensorFlow only where needed)."""
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    root = tmp_path / "artifacts"
    if bad.kind == "download":
        return Env(case_dir, root, url=request.getfixturevalue("download_server"), dead_url=dead)
    if bad.kind == "backbone":
        photos = request.getfixturevalue("module_photos")
        if bad.stage:  # fails in the bottleneck stage: start from shards already built
            shutil.copytree(request.getfixturevalue("sharded_root"), root, symlinks=True)
        return Env(case_dir, root, photos=photos)
    if bad.kind == "predict":
        model, good = request.getfixturevalue("frozen_model")
        return Env(case_dir, root, model=model, good_image=good)
    return Env(case_dir, root, captchas=request.getfixturevalue("module_captchas"), dead_url=dead)


@pytest.mark.parametrize(("bad", "skip_bad"), surface_params())
def test_bad_input_is_refused_by_name(bad: BadSurface, skip_bad: bool, tmp_path: Path, luigi_config: object,
                                      request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture,
                                      tmp_path_factory: pytest.TempPathFactory,
                                      figures: Callable[..., None]) -> None:
    with dead_port() as port:
        env = env_for(bad, tmp_path, request, f"http://127.0.0.1:{port}/")
        if bad.registry_file:  # the registry's own cifar10 file and pinned md5, served by the loopback server
            entry = get_dataset("cifar10")
            sources = tuple(dataclasses.replace(s, url=env.url + bad.registry_file) for s in entry.sources)
            monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(entry, sources=sources))
        for section, option, value in bad.luigi_settings:
            set_config(section, option, value)
        argv = bad.argv(env) + (["--skip-bad"] if skip_bad else [])  # writes the case's inputs first
        base = tmp_path_factory.getbasetemp()
        before = Before(outside_root(base, env.root), repository_top(), manifests_below(env.root))
        capsys.readouterr()
        run = (run_in_subprocess(argv, env.tmp, bad.timeout_s) if bad.subprocess
               else run_in_process(argv, capsys, caplog))
    refused = (run.code == bad.code and not run.escaped and "Traceback" not in run.stderr + run.log)
    figures("bad_input", "refused" if refused else "traceback" if run.escaped or "Traceback" in run.stderr
            else "wrong_refusal", kind=bad.kind, case=bad.case + ("-skip-bad" if skip_bad else ""),
            exit_code=run.code, seconds=round(run.seconds, 2), message=(run.tfpipe_lines or [""])[0][:300])
    assert_surface_refused(run, bad, argv, env, before, base, skip_bad)
    if bad.subprocess:  # a refusal must be quick, not a wait on retries
        assert run.seconds < 15, run.seconds


def test_the_docs_table_lists_every_case() -> None:
    """``python -m tests.reliability.bad_surfaces --markdown``: one row per case of both catalogues."""
    table = markdown_table()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    ids = [row.split("`")[1] for row in rows]
    assert ids == [b.id for b in BAD_SOURCES] + [b.id for b in BAD_SURFACES]
    assert len(set(ids)) == len(ids), "two cases share an id"
    assert len(ids) + len(PREDICT_IMAGES) >= 60  # the floor, counting the --skip-bad variants
