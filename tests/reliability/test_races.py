"""Races: two ``tfpipe run`` processes started at the same moment on one pipeline and one artifact root.

Two set-ups (issue 13, item 3):

- **one central luigid**: both processes pass ``--scheduler-url``. luigid hands each task to one worker, so every
  artifact must be built exactly once (a double run is a failure) and both processes must exit 0: the loser's
  tasks were done by the other worker.
- **two local schedulers**: nothing coordinates the processes but the store. Both must exit 0 (the store keeps the
  valid artifact already in place, ``tasks/store/artifacts.py``); an artifact built twice is possible and counted, never
  an error, but it must never leave a corrupt or partial artifact.

Each repeat races in a fresh artifact root on its own copy (a hard link) of one tiny generated CIFAR-10 archive, so
luigid sees new task ids while the artifact keys stay those of the reference run. The processes are
``race_harness.py`` subprocesses running the real CLI: they import everything, wait at a file barrier, then race;
the harness logs every build's start and end, which gives the number of builds per artifact. After both exit the
root is audited against the reference run: one directory per stage with the reference's name, a valid manifest
naming exactly the files present, every file re-hashed, every file's content equal to the reference's (files with
wall-clock times inside compared without them, see ``comparable_digest``), no temporary or partial leftovers, no
lease left, both runs in the run log. Every repeat is one ``figures("race", ...)`` line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tasks.datasets.cifar.codec import CIFAR10
from tasks.store import artifacts as store
from tests.fakes.cifar import write_cifar_archive
from tests.helpers.processes import luigid as start_luigid
from tests.reliability.conftest import Record

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "cifar10"
RIVALS = ("a", "b")
READY_TIMEOUT_S = 300.0  # two processes importing Luigi (and TensorFlow) on a busy 2-core machine
RUN_TIMEOUT_S = 900.0
LUIGID_START_TIMEOUT_S = 60.0
CODE_CHANGE_RETRIES = 3  # a repeat raced while someone edited the code is raced again, this many times at most
# MANIFEST.json fields that are wall-clock times of the build, the only ones allowed to differ between two builds.
MANIFEST_TIMES = ("started_at", "finished_at", "seconds")
# TensorBoard names its event files events.out.tfevents.<unix time>.<host>.<pid>.<n>.v2
EVENT_FILE = re.compile(r"events\.out\.tfevents\.\d+\.[^/]+\.\d+\.(\d+)\.v2$")


@dataclass(frozen=True)
class Scenario:
    """What the racing processes run: the stage to stop at and any ``--set`` overrides."""

    until: str
    overrides: tuple[str, ...] = ()
    import_tf: bool = False  # import TensorFlow before the barrier, so that both rivals really race on training

    def cli_args(self, source: Path, root: Path) -> list[str]:
        sets = [arg for override in self.overrides for arg in ("--set", override)]
        return ["run", PIPELINE, "--source", str(source), "--until", self.until, "--artifacts", str(root), *sets]


# The cheap race: download -> decode -> imagedirs -> tfrecords, no TensorFlow (about a second per run).
SHARDS = Scenario("tfrecords")
# Through training: a one-epoch mlp on the same tiny data (about 15 s per run on 2 cores).
TRAIN = Scenario("train", ("Train.model=mlp", "Train.epochs=1", "Train.batch_size=32"), import_tf=True)


# ---- the data, the scheduler ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("race-src") / CIFAR10.archive_name
    write_cifar_archive(path, CIFAR10, 100, 20, seed=7)
    return path


@pytest.fixture(scope="module")
def luigid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One central scheduler on a free loopback port for every repeat of the module; stopped at the end."""
    with start_luigid(tmp_path_factory.mktemp("luigid"), timeout_s=LUIGID_START_TIMEOUT_S) as url:
        yield url


# ---- running the rivals -------------------------------------------------------------------------------------
@dataclass
class Race:
    """One repeat's processes and what they left."""

    directory: Path
    codes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def root(self) -> Path:
        return self.directory / "root"

    @property
    def events(self) -> Path:
        return self.directory / "events"

    def log(self, rival: str, stream: str) -> str:
        return (self.directory / f"{rival}.{stream}").read_text(errors="replace")


def harness_command(race: Race, rival: str, scenario: Scenario, source: Path, scheduler_url: str | None) -> list[str]:
    command = [sys.executable, "-m", "tests.reliability.race_harness", "--events", str(race.events),
               "--ready", str(race.directory / f"ready-{rival}"), "--go", str(race.directory / "go")]
    if scenario.import_tf:
        command.append("--import-tf")
    command += ["--", *scenario.cli_args(source, race.root)]
    return command + (["--scheduler-url", scheduler_url] if scheduler_url else [])


def harness_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("LUIGI_CONFIG_PATH", None)  # the project's luigi.cfg, as in the reference run
    return env


def stop(processes: dict[str, subprocess.Popen]) -> None:
    """Kill what is still running (each rival is its own process group: Luigi may have forked)."""
    for process in processes.values():
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def wait_until_ready(race: Race, processes: dict[str, subprocess.Popen]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all((race.directory / f"ready-{rival}").exists() for rival in processes):
        early = {rival: p.returncode for rival, p in processes.items() if p.poll() is not None}
        if early:
            raise AssertionError(f"{race.directory}: rival(s) exited before the barrier: {early}; "
                                 f"stderr: {[race.log(r, 'err')[-1500:] for r in early]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{race.directory}: rivals not ready within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.02)


def run_rivals(race: Race, scenario: Scenario, source: Path, scheduler_url: str | None,
               rivals: tuple[str, ...] = RIVALS) -> Race:
    """Start the rivals, release them together once all are ready, wait for all (bounded), note exit codes."""
    race.directory.mkdir(parents=True)
    processes: dict[str, subprocess.Popen] = {}
    try:
        for rival in rivals:
            with open(race.directory / f"{rival}.out", "wb") as out, open(race.directory / f"{rival}.err", "wb") as err:
                processes[rival] = subprocess.Popen(harness_command(race, rival, scenario, source, scheduler_url),
                                                    cwd=REPO, env=harness_env(), stdout=out, stderr=err,
                                                    start_new_session=True)
        wait_until_ready(race, processes)
        started = time.monotonic()
        (race.directory / "go").touch()
        deadline = started + RUN_TIMEOUT_S
        for rival, process in processes.items():
            race.codes[rival] = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        race.seconds = time.monotonic() - started
    finally:
        stop(processes)
    return race


def builds_per_artifact(events: Path) -> tuple[Counter[str], list[str]]:
    """``{<Family>-<key>: builds started}`` from the harness's lines, and the problems in them (a build that
    started and never ended means a rival died inside it)."""
    started: Counter[str] = Counter()
    ended: Counter[str] = Counter()
    lines = events.read_text().splitlines() if events.exists() else []
    for line in lines:
        name, _harness_pid, _pid, what, *_ = line.split() + [""]
        (started if what == "start" else ended)[name] += 1
    problems = [f"{name}: {count} build(s) started, {ended[name]} ended" for name, count in sorted(started.items())
                if ended[name] != count]
    return started, problems


# ---- what an artifact holds, comparably -----------------------------------------------------------------------
def normalised_name(relative: str) -> str:
    """A file's name with the wall-clock time, host and pid TensorBoard puts in event file names taken out."""
    return EVENT_FILE.sub(r"events.out.tfevents.*.\1.v2", relative)


def compared_by_content(relative: str) -> bool:
    """Files whose bytes carry wall-clock times or memory addresses; ``comparable_digest`` reads them."""
    return relative.endswith(".keras") or bool(EVENT_FILE.search(relative))


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The manifest without its build times; files compared by content are listed by their normalised name only
    (their bytes, and so size and sha256, legitimately differ between two builds)."""
    kept = {key: value for key, value in manifest.items() if key not in MANIFEST_TIMES}
    kept["files"] = {normalised_name(rel): (None if compared_by_content(rel) else entry)
                     for rel, entry in manifest.get("files", {}).items()}
    return hashlib.sha256(store.canonical_json(kept).encode()).hexdigest()


def renumber_shared_objects(text: str) -> str:
    """Keras writes ``shared_object_id`` = the Python ``id()`` of a shared object: numbered by first use instead."""
    numbers: dict[str, str] = {}
    return re.sub(r'"shared_object_id": (\d+)', lambda m: f'"shared_object_id": '
                  f'{numbers.setdefault(m.group(1), str(len(numbers)))}', text)


def keras_digest(path: Path) -> str:
    """A ``.keras`` zip by its members: metadata.json without ``date_saved``, config.json with object ids
    renumbered, the weights byte for byte (zip entry dates are ignored)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            data = archive.read(name)
            if name == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = store.canonical_json(meta).encode()
            elif name == "config.json":
                data = renumber_shared_objects(data.decode()).encode()
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def events_digest(path: Path) -> str:
    """A TensorBoard event file by its events with ``wall_time`` cleared (TFRecord framing read by hand)."""
    from tensorboard.compat.proto import event_pb2

    data, offset, digest = path.read_bytes(), 0, hashlib.sha256()
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        record = data[offset + 12: offset + 12 + length]  # u64 length, u32 crc, data, u32 crc
        if len(record) != length:
            return f"truncated at byte {offset}"
        offset += 12 + length + 4
        event = event_pb2.Event.FromString(record)
        event.ClearField("wall_time")
        digest.update(hashlib.sha256(event.SerializeToString(deterministic=True)).digest())
    return digest.hexdigest()


def comparable_digest(path: Path, relative: str) -> str:
    if relative == store.MANIFEST_NAME:
        return manifest_digest(json.loads(path.read_text()))
    if relative.endswith(".keras"):
        return keras_digest(path)
    if EVENT_FILE.search(relative):
        return events_digest(path)
    return store.sha256_file(path)


def stage_entries(root: Path) -> dict[str, list[Path]]:
    """Every stage folder's entries (artifacts, temporaries, work and partial folders), by stage."""
    stages = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "runs"]
    return {stage.name: sorted(stage.iterdir()) for stage in stages}


def artifact_dirs(root: Path) -> list[Path]:
    return [path for entries in stage_entries(root).values() for path in entries
            if path.is_dir() and not path.name.startswith(".")]


def snapshot(root: Path) -> dict[str, str]:
    """``{<stage>/<Family>-<key>/<normalised file>: comparable digest}`` of every artifact under ``root``."""
    found = {}
    for directory in artifact_dirs(root):
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            relative = path.relative_to(directory).as_posix()
            name = f"{directory.parent.name}/{directory.name}/{normalised_name(relative)}"
            found[name] = comparable_digest(path, relative)
    return found


# ---- the audit ---------------------------------------------------------------------------------------------
@dataclass
class Audit:
    corrupt: list[str] = field(default_factory=list)  # an artifact missing, partial, wrong or not as the reference
    other: list[str] = field(default_factory=list)  # exit codes, leftovers, run log, double runs under luigid

    @property
    def problems(self) -> list[str]:
        return self.corrupt + self.other


def audit_artifacts(root: Path, reference: dict[str, str], audit: Audit) -> None:
    """Each reference artifact once, valid, intact, exactly its manifest's files, contents as the reference's."""
    expected = sorted({"/".join(name.split("/")[:2]) for name in reference})
    present = sorted(f"{d.parent.name}/{d.name}" for d in artifact_dirs(root))
    if present != expected:
        audit.corrupt.append(f"artifact directories {present}, expected {expected}")
    for directory in artifact_dirs(root):
        key = directory.name.rsplit("-", 1)[-1]
        if not store.is_valid_artifact(directory, key):
            audit.corrupt.append(f"{directory}: not a valid artifact")
        audit.corrupt.extend(store.verify_artifact(directory))
        listed = set((store.read_manifest(directory) or {}).get("files", {}))
        on_disk = {p.as_posix() for p in store.list_files(directory)}
        if listed != on_disk:
            audit.corrupt.append(f"{directory}: files not in the manifest {sorted(on_disk - listed)[:5]}, "
                                 f"listed but absent {sorted(listed - on_disk)[:5]}")
    found = snapshot(root)
    differing = sorted(name for name in set(found) | set(reference) if found.get(name) != reference.get(name))
    if differing:
        audit.corrupt.append(f"{len(differing)} file(s) differ from the reference run: {differing[:5]}")


def audit_leftovers(root: Path, audit: Audit) -> None:
    """No temporary build directory, partial download, training work folder or lease survives both runs."""
    for stage, entries in stage_entries(root).items():
        for path in entries:
            if path.name.startswith(store.TEMP_PREFIX):
                audit.other.append(f"temporary directory left: {stage}/{path.name}")
            elif path.name.startswith(".") and path.is_dir() and any(path.iterdir()):
                audit.other.append(f"{stage}/{path.name} not empty: {sorted(p.name for p in path.iterdir())[:5]}")
    leases = sorted(p.name for p in (root / ".leases").glob("*")) if (root / ".leases").is_dir() else []
    if leases:
        audit.other.append(f"leases left: {leases}")


def audit_run_log(root: Path, codes: dict[str, int], audit: Audit) -> None:
    """Both runs recorded, each line whole, with the exit codes the processes returned."""
    path = root / "runs" / f"{PIPELINE}.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    try:
        recorded = sorted(json.loads(line)["exit_code"] for line in lines)
    except (ValueError, KeyError) as error:
        audit.other.append(f"run log {path}: unreadable line ({error})")
        return
    if recorded != sorted(codes.values()):
        audit.other.append(f"run log records exit codes {recorded}, the processes returned {sorted(codes.values())}")


def error_lines(stderr: str, keep: int = 3) -> list[str]:
    """The lines of a rival's stderr that say what failed (not its progress bars)."""
    lines = [line.strip()[:400] for line in stderr.splitlines() if "tfpipe:" in line or "Error" in line]
    return lines[-keep:]


def audit_race(race: Race, reference: dict[str, str], builds: Counter[str], *, central: bool) -> Audit:
    audit = Audit()
    if any(code != 0 for code in race.codes.values()):
        tails = {r: error_lines(race.log(r, "err")) for r, c in race.codes.items() if c != 0}
        audit.other.append(f"exit codes {race.codes} (0 expected for both); stderr tails: {tails}")
    audit_artifacts(race.root, reference, audit)
    audit_leftovers(race.root, audit)
    audit_run_log(race.root, race.codes, audit)
    expected = {name.split("/")[1] for name in reference}  # the <Family>-<key> of every reference artifact
    never_built = sorted(expected - set(builds))
    if never_built:
        audit.other.append(f"never built (by either rival): {never_built}")
    if central:
        twice = {name: count for name, count in builds.items() if count != 1}
        if twice:
            audit.other.append(f"double runs under luigid: {twice}")
    return audit


# ---- the reference and the repeats ----------------------------------------------------------------------------
def code_version() -> str:
    """A digest of the product code and config: other people edit the checkout while a long series runs, and a
    race is only comparable with an unraced run of the same code."""
    digest = hashlib.sha256()
    files = sorted(p for folder in ("tasks", "pipelines", "models") for p in (REPO / folder).rglob("*.py"))
    for path in [*files, REPO / "luigi.cfg"]:
        with contextlib.suppress(OSError):
            digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class References:
    """One unraced run per scenario and code version through the same harness (same imports, so the same
    ``libraries`` in the manifests), made on first use and shared by the module's tests."""

    def __init__(self, archive: Path, directory: Path) -> None:
        self.archive, self.directory = archive, directory
        self.snapshots: dict[tuple[Scenario, str], dict[str, str]] = {}

    def of(self, scenario: Scenario, version: str) -> dict[str, str]:
        if (scenario, version) not in self.snapshots:
            name = f"reference-{scenario.until}-{len(self.snapshots)}"
            race = Race(self.directory / name)
            source = link_source(self.archive, self.directory / f"{name}-src")
            run_rivals(race, scenario, source, scheduler_url=None, rivals=("a",))
            assert race.codes == {"a": 0}, race.log("a", "err")[-3000:]
            self.snapshots[(scenario, version)] = snapshot(race.root)
        return self.snapshots[(scenario, version)]


@pytest.fixture(scope="module")
def references(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(archive, tmp_path_factory.mktemp("race-references"))


def link_source(archive: Path, directory: Path) -> Path:
    """The archive under a new path (new Luigi task ids), same bytes (same artifact keys)."""
    directory.mkdir(parents=True)
    copy = directory / archive.name
    os.link(archive, copy)
    return copy


@dataclass
class Tally:
    """What a series of repeats found."""

    problems: list[str] = field(default_factory=list)
    double_runs: int = 0
    corrupt: int = 0


def race_once(index: int, scenario: Scenario, references: References, base: Path, scheduler_url: str | None,
              figures: Record, tally: Tally) -> None:
    """One repeat: race, audit, record one figures line, add to the tally."""
    for attempt in range(CODE_CHANGE_RETRIES):
        version = code_version()
        reference = references.of(scenario, version)
        source = link_source(references.archive, base / f"src-{index}-{attempt}")
        race = run_rivals(Race(base / f"race-{index}-{attempt}"), scenario, source, scheduler_url)
        if code_version() == version:
            break
        print(f"repeat {index}: the product code changed during the race; racing again")
    else:
        tally.problems.append(f"repeat {index}: the product code changed during each of {CODE_CHANGE_RETRIES} tries")
        return
    builds, event_problems = builds_per_artifact(race.events)
    audit = audit_race(race, reference, builds, central=scheduler_url is not None)
    audit.other.extend(event_problems)
    double_runs = sum(count - 1 for count in builds.values() if count > 1)
    outcome = "corrupt" if audit.corrupt else "ok" if not audit.other else "failed"
    figures("race", outcome, scheduler="luigid" if scheduler_url else "local", double_runs=double_runs,
            until=scenario.until, repeat=index, exit_codes=sorted(race.codes.values()), seconds=round(race.seconds, 2),
            builds=dict(sorted(builds.items())), problems=audit.problems[:5])
    tally.problems += [f"repeat {index} ({scenario.until}): {problem}" for problem in audit.problems]
    tally.double_runs += double_runs
    tally.corrupt += bool(audit.corrupt)


def race_repeats(plan: list[Scenario], references: References, base: Path, scheduler_url: str | None,
                 figures: Record) -> Tally:
    """Every repeat of ``plan``, each audited, none stopping the others."""
    tally = Tally()
    for index, scenario in enumerate(plan):
        race_once(index, scenario, references, base, scheduler_url, figures, tally)
    where = "luigid" if scheduler_url else "local schedulers"
    print(f"{len(plan)} race(s) under {where}: {tally.corrupt} with a corrupt artifact, "
          f"{tally.double_runs} double run(s), {len(tally.problems)} problem(s)")
    return tally


def assert_no_problems(tally: Tally, repeats: int) -> None:
    assert not tally.problems, (f"{len(tally.problems)} problem(s) in {repeats} race(s):\n"
                                + "\n".join(tally.problems[:40]))


# ---- the tests ---------------------------------------------------------------------------------------------
def test_two_processes_on_one_luigid_build_each_artifact_once(references: References, luigid: str, tmp_path: Path,
                                                              figures: Record) -> None:
    plan = [SHARDS] * 2
    assert_no_problems(race_repeats(plan, references, tmp_path, luigid, figures), len(plan))


def test_two_local_schedulers_on_one_root_never_corrupt(references: References, tmp_path: Path,
                                                        figures: Record) -> None:
    plan = [SHARDS]
    assert_no_problems(race_repeats(plan, references, tmp_path, None, figures), len(plan))


@pytest.mark.slow
def test_fifty_races_on_one_luigid(references: References, luigid: str, tmp_path: Path, figures: Record) -> None:
    plan = [TRAIN] * 5 + [SHARDS] * 45  # the training races first: a failure there shows early
    assert_no_problems(race_repeats(plan, references, tmp_path, luigid, figures), len(plan))


@pytest.mark.slow
def test_twenty_races_of_local_schedulers(references: References, tmp_path: Path, figures: Record) -> None:
    plan = [TRAIN] * 3 + [SHARDS] * 17
    assert_no_problems(race_repeats(plan, references, tmp_path, None, figures), len(plan))


def test_commit_that_loses_the_rename_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The narrowest window of the local race, made certain: the rival's directory lands between this build's
    ``final.exists()`` check and its rename. The loser must keep the winner's artifact and not fail."""
    identity = store.ArtifactIdentity("Race", "race", "0123456789ab", 1, {}, {})
    final = identity.directory(tmp_path)
    winner = final.parent / store._temp_dir_name(identity)  # a live owner's name: the sweep leaves it alone
    winner.mkdir(parents=True)
    (winner / "data.txt").write_text("the winner's bytes\n")
    store.write_manifest(winner, identity, {})
    real_rename = os.rename

    def rival_commits_first(source: str | Path, destination: str | Path) -> None:
        if Path(destination) == final and not final.exists():
            real_rename(winner, final)  # the rival's commit, just before ours
        real_rename(source, destination)

    monkeypatch.setattr(store.os, "rename", rival_commits_first)
    with store.building(tmp_path, identity) as (temp, _extra):
        (temp / "data.txt").write_text("the loser's bytes\n")
    monkeypatch.undo()
    assert (final / "data.txt").read_text() == "the winner's bytes\n"
    assert store.is_valid_artifact(final, identity.key) and store.verify_artifact(final) == []
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # the loser's temporary directory is gone
