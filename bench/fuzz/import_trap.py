"""Never imported on purpose: seed pickles name ``bench.fuzz.import_trap.anything``; importing it is a bypass."""

from __future__ import annotations

from bench.fuzz.sentinel import CALLS

CALLS.append("bench.fuzz.import_trap was imported")


def anything(*args: object) -> None:
    CALLS.append("bench.fuzz.import_trap.anything called")
