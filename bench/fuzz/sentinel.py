"""Traps for the restricted-unpickler target: anything here that runs means the allow-list was bypassed.

``trap`` records every call; seed pickles name it (``GLOBAL bench.fuzz.sentinel trap``) so that a
``find_class`` that fell back to importing would call it. ``bench.fuzz.import_trap`` records its own import.
"""

from __future__ import annotations

CALLS: list[str] = []


def trap(*args: object, **kwargs: object) -> None:
    CALLS.append(f"bench.fuzz.sentinel.trap called with {len(args)} args")
