"""Bounded atheris (libFuzzer) runs of every fuzz target; crashes, hangs and out-of-memory inputs are failures.

Usage::

    .venv/bin/pip install -e '.[fuzz]'          # atheris
    .venv/bin/python bench/fuzz/run.py --seconds 60 --out fuzz-summary.json [--targets gnt idx] [--workdir DIR]

Each target runs in its own subprocess (``run.py --child TARGET <libFuzzer flags>``: ``atheris.Setup`` +
``atheris.Fuzz`` with the tfpipe modules, and for some targets the stdlib or Pillow modules they drive,
instrumented for coverage) with ``-max_total_time``, ``-timeout`` (one input over it is a hang),
``-rss_limit_mb``, ``-max_len`` and ``-print_final_stats=1``, over the seed corpus of ``corpus.py`` plus a
working corpus kept in ``--workdir`` (a rerun with the same workdir continues from it). Executions come from
libFuzzer's ``stat::number_of_executed_units``; crashes, hangs and OOMs from the ``crash-*``, ``timeout-*``
and ``oom-*`` inputs libFuzzer writes (kept in ``WORKDIR/artifacts/TARGET/`` to become regression tests).
Prints a table, writes a JSON summary to ``--out``, appends one line per target to
``$TFPIPE_RELIABILITY_LOG`` when set, and exits 1 if any target crashed or hung.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_NAMES = ("gnt", "safe_pickle", "idx", "archive", "tfrecord", "image")
# Modules instrumented for coverage feedback in each child, besides tfpipe's own and bench.fuzz.
INSTRUMENTED = {
    "gnt": [],
    "safe_pickle": [],
    "idx": ["gzip"],
    "archive": ["tarfile", "zipfile", "gzip", "bz2", "lzma", "shutil"],
    "tfrecord": [],
    "image": ["PIL"],
}
# Per-input time limits (s): Pillow may legitimately decode a large declared image for a few seconds.
TIMEOUTS = {"image": 30}
DEFAULT_TIMEOUT = 10
STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.MULTILINE)
PROGRESS = re.compile(r"^#(\d+)\s+(?:DONE|pulse|NEW|REDUCE|INITED)\s.*?cov: (\d+) ft: (\d+)", re.MULTILINE)


@dataclass
class TargetResult:
    target: str
    outcome: str  # ok, crash, hang, oom, error
    executions: int
    seconds: float
    exec_per_s: float
    crashes: int
    hangs: int
    ooms: int
    seeds: int
    corpus_units: int
    coverage: int | None
    features: int | None
    peak_rss_mb: int | None
    returncode: int
    artifacts: list[str] = field(default_factory=list)
    log: str = ""


# ---- child: one target under atheris ----------------------------------------------------------------------
def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["tasks", "bench.fuzz", *INSTRUMENTED[target]]):
        from bench.fuzz.targets import TARGETS
    fuzz = TARGETS[target]

    def test_one_input(data: bytes) -> None:
        fuzz(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


# ---- parent: run, collect, report -------------------------------------------------------------------------
def run_target(target: str, workdir: Path, args: argparse.Namespace) -> TargetResult:
    """Fuzz ``target`` for ``args.seconds``; after a crash, hang or OOM libFuzzer stops, so unless
    ``--stop-on-first`` a new child resumes from the working corpus for the time left (every finding is kept)."""
    from bench.fuzz.corpus import write_corpus

    seeds = write_corpus(workdir / "seeds", [target])[target]
    corpus = workdir / "corpus" / target
    artifacts = workdir / "artifacts" / target
    for folder in (corpus, artifacts, workdir / "logs"):
        folder.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    started = time.monotonic()
    runs: list[TargetResult] = []
    while True:
        left = _seconds(args, target) - (time.monotonic() - started)
        if runs and (args.stop_on_first or left < 5 or runs[-1].outcome in ("ok", "error")):
            break
        runs.append(_run_child(target, workdir, args, max(5, int(left)), len(runs), seeds, corpus))
    return _merged(runs, time.monotonic() - started, sorted(set(artifacts.iterdir()) - before))


def _run_child(target: str, workdir: Path, args: argparse.Namespace, seconds: int, attempt: int, seeds: int,
               corpus: Path) -> TargetResult:
    artifacts = workdir / "artifacts" / target
    before = set(artifacts.iterdir())
    timeout = args.timeout or TIMEOUTS.get(target, DEFAULT_TIMEOUT)
    flags = [f"-max_total_time={seconds}", f"-timeout={timeout}", f"-rss_limit_mb={args.rss_limit_mb}",
             f"-max_len={args.max_len}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
             str(corpus), str(workdir / "seeds" / target)]
    log = workdir / "logs" / f"{target}.{attempt}.log"
    started = time.monotonic()
    with open(log, "w") as stream:
        completed = subprocess.run([sys.executable, __file__, "--child", target, *flags], stdout=stream,
                                   stderr=subprocess.STDOUT, cwd=REPO, check=False,
                                   timeout=seconds + 10 * timeout + 300)
    new = sorted(set(artifacts.iterdir()) - before)
    return _result(target, log, completed.returncode, time.monotonic() - started, seeds, corpus, new)


def _seconds(args: argparse.Namespace, target: str) -> int:
    overrides = dict(item.split("=", 1) for item in args.seconds_for)
    return int(overrides.get(target, args.seconds))


def _merged(runs: list[TargetResult], seconds: float, new_artifacts: list[Path]) -> TargetResult:
    """One result for all the children of a target: executions summed, the worst outcome."""
    # each child counted the findings new in its own time, so the sums count every finding once
    crashes, hangs, ooms = (sum(getattr(run, kind) for run in runs) for kind in ("crashes", "hangs", "ooms"))
    errors = any(run.outcome == "error" for run in runs)
    outcome = "crash" if crashes else "hang" if hangs else "oom" if ooms else "error" if errors else "ok"
    executions = sum(run.executions for run in runs)
    last = runs[-1]
    return TargetResult(
        target=last.target, outcome=outcome, executions=executions, seconds=round(seconds, 1),
        exec_per_s=round(executions / seconds, 1) if seconds else 0.0, crashes=crashes, hangs=hangs, ooms=ooms,
        seeds=last.seeds, corpus_units=last.corpus_units, coverage=last.coverage, features=last.features,
        peak_rss_mb=max((run.peak_rss_mb or 0) for run in runs) or None, returncode=last.returncode,
        artifacts=[str(path) for path in new_artifacts], log=" ".join(run.log for run in runs))


def _result(target: str, log: Path, returncode: int, seconds: float, seeds: int, corpus: Path,
            new_artifacts: list[Path]) -> TargetResult:
    text = log.read_text(errors="replace")
    stats = {name: int(value) for name, value in STAT.findall(text)}
    progress = PROGRESS.findall(text)
    executions = stats.get("number_of_executed_units", int(progress[-1][0]) if progress else 0)
    kinds = [path.name.split("-", 1)[0] for path in new_artifacts]
    crashes, hangs, ooms = kinds.count("crash"), kinds.count("timeout"), kinds.count("oom")
    if not crashes and "=== Uncaught Python exception: ===" in text:
        crashes = 1  # libFuzzer wrote no new crash-* file (the input's name was taken by an earlier finding)
    outcome = "crash" if crashes else "hang" if hangs else "oom" if ooms else "ok"
    if outcome == "ok" and (returncode != 0 or "stat::number_of_executed_units" not in text):
        outcome = "error"  # the child died without telling libFuzzer's story: read the log
    return TargetResult(
        target=target, outcome=outcome, executions=executions, seconds=round(seconds, 1),
        exec_per_s=round(executions / seconds, 1) if seconds else 0.0, crashes=crashes, hangs=hangs, ooms=ooms,
        seeds=seeds, corpus_units=sum(1 for _ in corpus.iterdir()),
        coverage=int(progress[-1][1]) if progress else None, features=int(progress[-1][2]) if progress else None,
        peak_rss_mb=stats.get("peak_rss_mb"), returncode=returncode,
        artifacts=[str(path) for path in new_artifacts], log=str(log))


def _table(results: list[TargetResult]) -> str:
    header = f"{'target':<12} {'outcome':<8} {'executions':>11} {'seconds':>8} {'exec/s':>8} {'crash':>5} " \
             f"{'hang':>4} {'oom':>4} {'cov':>6} {'rss MB':>6}"
    rows = [header, "-" * len(header)]
    for r in results:
        rows.append(f"{r.target:<12} {r.outcome:<8} {r.executions:>11,} {r.seconds:>8.1f} {r.exec_per_s:>8.0f} "
                    f"{r.crashes:>5} {r.hangs:>4} {r.ooms:>4} {r.coverage or '-':>6} {r.peak_rss_mb or '-':>6}")
    total = sum(r.executions for r in results)
    rows.append(f"{'total':<12} {'':<8} {total:>11,} {sum(r.seconds for r in results):>8.1f}")
    return "\n".join(rows)


def _log_figures(results: list[TargetResult]) -> None:
    """One line per target in $TFPIPE_RELIABILITY_LOG, in the reliability suite's ``figures`` format."""
    log = os.environ.get("TFPIPE_RELIABILITY_LOG")
    if not log:
        return
    with open(log, "a") as handle:
        for r in results:
            outcome = "crash" if r.outcome in ("crash", "oom", "error") else r.outcome
            row = {"category": "fuzz", "outcome": outcome, "test": f"bench/fuzz/run.py::{r.target}",
                   "time": time.time(), "target": r.target, "executions": r.executions, "seconds": r.seconds,
                   "crashes": r.crashes, "hangs": r.hangs, "ooms": r.ooms}
            handle.write(json.dumps(row, sort_keys=True) + "\n")


def _summary(results: list[TargetResult], args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    from importlib.metadata import version

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "atheris": version("atheris"),
        "seconds_per_target": {target: _seconds(args, target) for target in args.targets},
        "rss_limit_mb": args.rss_limit_mb,
        "max_len": args.max_len,
        "workdir": str(workdir),
        "total_executions": sum(r.executions for r in results),
        "ok": all(r.outcome == "ok" for r in results),
        "targets": {r.target: asdict(r) for r in results},
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=TARGET_NAMES, default=list(TARGET_NAMES))
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    parser.add_argument("--seconds-for", nargs="+", default=[], metavar="TARGET=S",
                        help="a different time for some targets, e.g. gnt=150 idx=150")
    parser.add_argument("--timeout", type=int, default=0,
                        help=f"per-input limit in s; default {DEFAULT_TIMEOUT}, image {TIMEOUTS['image']}")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=1 << 16, help="largest input in bytes (default 65536)")
    parser.add_argument("--workdir", type=Path, help="corpus, crash inputs and logs (default: a new temp dir)")
    parser.add_argument("--out", type=Path, help="write the JSON summary here")
    parser.add_argument("--stop-on-first", action="store_true",
                        help="stop a target at its first finding (default: resume for the time left)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tfpipe-fuzz-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # imported here, not at the top: a child must import the targets inside atheris.instrument_imports
    from bench.fuzz.targets import SCRATCH_BASE_ENV, remove_tree, tmpfs_dir

    results = []
    scratch = Path(tempfile.mkdtemp(prefix="tfpipe-fuzz-run-", dir=tmpfs_dir()))
    os.environ[SCRATCH_BASE_ENV] = str(scratch)  # the children's scratch files, removed here whatever they did
    try:
        for target in args.targets:
            print(f"fuzzing {target} for {_seconds(args, target)} s ...", flush=True)
            results.append(run_target(target, workdir, args))
            print(f"  {results[-1].outcome}: {results[-1].executions:,} executions", flush=True)
    finally:
        remove_tree(scratch)
    print(_table(results))
    summary = _summary(results, args, workdir)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    _log_figures(results)
    for r in results:
        for artifact in r.artifacts:  # crash-*, timeout-*, oom-* (and libFuzzer's slow-unit-* notes)
            print(f"{r.target}: {Path(artifact).name.split('-')[0]} input {artifact}")
        if r.outcome != "ok":
            print(f"{r.target}: logs {r.log}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
