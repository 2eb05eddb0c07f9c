"""The fuzz targets of bench/fuzz without atheris: every seed plus deterministic mutations, no crash allowed.

A crash is any exception other than the reader's named error, or a ``ContractViolation`` (a broken round trip,
a disagreeing second reader, a file outside the extraction directory, code run or imported outside the
unpickler's allow-list). The full coverage-guided runs are ``bench/fuzz/run.py``; this is the fast part of the
default suite (a few seconds). The last tests check the oracles themselves: a reader made unsafe on purpose
must be caught, or "no crash" would prove nothing.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.fuzz import sentinel, targets
from bench.fuzz.corpus import MAX_SEED_BYTES, seeds
from bench.fuzz.mutate import mutate, mutations
from bench.fuzz.targets import TARGETS, ContractViolation, Scratch

# Mutants per target, sized so the whole file stays well under 30 s on a loaded 2-core machine.
MUTANTS = {"gnt": 1500, "safe_pickle": 2000, "idx": 800, "archive": 250, "tfrecord": 1500, "image": 400}
MUTATION_SEED = 20261201
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scratch:
    """Each test's scratch files in its own tmp_path."""
    own = Scratch(tmp_path / "scratch")
    (tmp_path / "scratch").mkdir()
    monkeypatch.setattr(targets, "SCRATCH", own)
    return own


def _crashes(target: str, inputs: list[bytes]) -> list[tuple[bytes, BaseException]]:
    found = []
    for data in inputs:
        try:
            TARGETS[target](data)
        except Exception as exc:  # noqa: BLE001 - every other exception is the finding
            found.append((data, exc))
    return found


def _report(crashes: list[tuple[bytes, BaseException]]) -> str:
    return "\n".join(f"{type(exc).__name__}: {exc}\n  input ({len(data)} bytes): {data[:200]!r}"
                     for data, exc in crashes[:5])


# The unpickler runs in a child under an address-space limit: CPython's C unpickler grows its memo to twice any
# LONG_BINPUT index first (the open finding in test_fuzz_regressions.py), and a mutated index would otherwise
# zero-fill gigabytes in the test process. Under the limit that growth fails at once with MemoryError, which
# load_restricted must still turn into its named error -- the same contract, checked without the machine paying.
ADDRESS_SPACE_MB = {"safe_pickle": 1536}
CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = int(sys.argv[2]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from bench.fuzz.corpus import seeds
    from bench.fuzz.mutate import mutations
    from bench.fuzz.targets import TARGETS
    target, count, seed = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
    corpus = list(seeds(target).values())
    inputs = corpus + list(mutations(corpus, count, seed))
    crashes = []
    started = time.perf_counter()
    for data in inputs:
        try:
            TARGETS[target](data)
        except Exception as exc:
            crashes.append([data[:200].hex(), len(data), type(exc).__name__, str(exc)[:300]])
    print(json.dumps({"executions": len(inputs), "seconds": time.perf_counter() - started, "crashes": crashes}))
""")


def _run_in_child(target: str) -> tuple[int, float, list[str]]:
    done = subprocess.run([sys.executable, "-c", CHILD, target, str(ADDRESS_SPACE_MB[target]), str(MUTANTS[target]),
                           str(MUTATION_SEED)], capture_output=True, text=True, cwd=REPO, check=False, timeout=600)
    assert done.returncode == 0, f"the {target} child died: {done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    crashes = [f"{kind}: {message}\n  input ({size} bytes, first 200 hex): {head}"
               for head, size, kind, message in result["crashes"]]
    return result["executions"], result["seconds"], crashes


def _run_here(target: str) -> tuple[int, float, list[str]]:
    corpus = list(seeds(target).values())
    inputs = corpus + list(mutations(corpus, MUTANTS[target], MUTATION_SEED))
    started = time.perf_counter()
    crashes = _crashes(target, inputs)
    return len(inputs), time.perf_counter() - started, [_report([crash]) for crash in crashes]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_and_mutations_do_not_crash(target: str, figures) -> None:
    executions, seconds, crashes = (_run_in_child if target in ADDRESS_SPACE_MB else _run_here)(target)
    figures("fuzz", "crash" if crashes else "ok", target=target, executions=executions, seconds=round(seconds, 2),
            engine="deterministic mutations", crashes=len(crashes))
    assert not crashes, f"{len(crashes)} of {executions} inputs crashed {target}:\n" + "\n".join(crashes[:5])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_has_seeds_within_the_fuzzers_max_len(target: str) -> None:
    """libFuzzer cuts inputs at -max_len: a longer seed would start the fuzzer from a truncated file."""
    built = seeds(target)
    assert len(built) >= 5
    assert all(0 <= len(data) <= MAX_SEED_BYTES for data in built.values())
    assert len(set(built.values())) == len(built), "two seeds with the same bytes"


def test_mutations_are_deterministic() -> None:
    import random

    corpus = [b"\x80\x02K\x01.", bytes(range(64))]
    assert list(mutations(corpus, 50, 7)) == list(mutations(corpus, 50, 7))
    assert mutate(b"abc", random.Random(1)) == mutate(b"abc", random.Random(1))


# ---- the oracles catch what they are for -----------------------------------------------------------------
def test_unpickler_oracle_catches_a_call_outside_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    trap = seeds("safe_pickle")["trap_call"]
    TARGETS["safe_pickle"](trap)  # the real unpickler refuses it
    monkeypatch.setattr(targets.RestrictedUnpickler, "find_class", pickle.Unpickler.find_class)
    with pytest.raises(ContractViolation, match="outside its allow-list"):
        TARGETS["safe_pickle"](trap)
    assert not sentinel.CALLS  # the oracle reset the trap for the next input


def test_unpickler_oracle_catches_an_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets.RestrictedUnpickler, "find_class", pickle.Unpickler.find_class)
    monkeypatch.delitem(__import__("sys").modules, "bench.fuzz.import_trap", raising=False)
    with pytest.raises(ContractViolation):
        TARGETS["safe_pickle"](seeds("safe_pickle")["trap_import"])
    sentinel.CALLS.clear()


def test_archive_oracle_catches_a_write_outside_the_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    escape = seeds("archive")["zip_escape"]
    TARGETS["archive"](escape)
    import tasks.sources.archive as archive

    def no_checks(_archive: Path, name: str) -> str:
        return name.replace("\\", "/")

    monkeypatch.setattr(archive, "safe_member_path", no_checks)
    monkeypatch.setattr(archive, "_target_inside", lambda staging, relative, _a, _m: staging / relative)
    with pytest.raises(ContractViolation, match="beside the archive|outside its directory"):
        TARGETS["archive"](escape)


def test_gnt_oracle_catches_readers_that_disagree(monkeypatch: pytest.MonkeyPatch) -> None:
    several = seeds("gnt")["several"]
    TARGETS["gnt"](several)
    monkeypatch.setattr(targets, "iter_gnt_tags", lambda path: iter(["x"]))
    with pytest.raises(ContractViolation, match="iter_gnt_tags"):
        TARGETS["gnt"](several)


# ---- run.py reads libFuzzer's report right -----------------------------------------------------------------
LIBFUZZER_TAIL = """#8	INITED cov: 98 ft: 189 corp: 7/6383b exec/s: 0 rss: 75Mb
#399208	DONE   cov: 102 ft: 256 corp: 22/11273b lim: 7884 exec/s: 998 rss: 75Mb
Done 399208 runs in 400 second(s)
stat::number_of_executed_units: 399208
stat::average_exec_per_sec:     998
stat::new_units_added:          117
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              75
"""


def test_run_reads_executions_coverage_and_findings(tmp_path: Path) -> None:
    """Lines copied from a real atheris run; a crash is a new crash-* file or an uncaught exception in the log."""
    from bench.fuzz.run import _result

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    log = tmp_path / "gnt.log"
    log.write_text(LIBFUZZER_TAIL)
    clean = _result("gnt", log, 0, 401.0, 8, corpus, [])
    assert (clean.outcome, clean.executions, clean.coverage, clean.peak_rss_mb) == ("ok", 399208, 102, 75)
    found = _result("gnt", log, 1, 401.0, 8, corpus, [tmp_path / "timeout-ab12", tmp_path / "slow-unit-cd"])
    assert (found.outcome, found.hangs, found.crashes) == ("hang", 1, 0)
    log.write_text(" === Uncaught Python exception: ===\nValueError: x\n" + LIBFUZZER_TAIL)
    assert _result("gnt", log, 1, 401.0, 8, corpus, []).outcome == "crash"
    log.write_text("Traceback: the child died before libFuzzer started\n")
    assert _result("gnt", log, 1, 3.0, 8, corpus, []).outcome == "error"
