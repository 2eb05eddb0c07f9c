"""Run one function in a new Python process, for TensorFlow set-ups that must come before its runtime starts.

MultiWorkerMirroredStrategy configures collective ops, and splitting the CPU into logical devices configures the
devices; TensorFlow allows both only at program start ("Collective ops must be configured at program startup"),
and a Luigi worker that built earlier stages has long started it. The child is spawned (not forked), dies with
its parent (PR_SET_PDEATHSIG, or a watchdog thread), sends ``report(...)`` calls back as they happen, and
returns the function's result or re-raises its exception in the parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
Report = Callable[..., None]


class ChildProcessDied(RuntimeError):
    """The child ended without a result (killed, or crashed in native code)."""


def _die_with_parent(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # also where prctl is missing, and for the race of a parent dead before prctl
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(function: Callable[..., Any], argument: Any, messages: Any, parent: int) -> None:
    _die_with_parent(parent)

    def report(*values: Any) -> None:
        messages.put(("report", values))

    try:
        messages.put(("result", function(argument, report)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        try:
            messages.put(("error", error))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text does
            messages.put(("error", RuntimeError(f"{type(error).__name__}: {error}")))


def run_in_fresh_process(function: Callable[[Any, Report], Any], argument: Any,
                         on_report: Callable[..., None] | None = None) -> Any:
    """``function(argument, report)`` in a spawned process; ``report(*values)`` there calls ``on_report(*values)``
    here. ``function`` must be importable by name (a module-level function) and ``argument`` picklable."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    child = context.Process(target=_child, args=(function, argument, messages, os.getpid()), daemon=True)
    child.start()
    try:
        while True:
            try:
                kind, value = messages.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    child.join()
                    raise ChildProcessDied(f"the child process {child.pid} ended with exit code "
                                           f"{child.exitcode} and no result") from None
                continue
            if kind == "report":
                if on_report is not None:
                    on_report(*value)
            elif kind == "error":
                raise value
            else:
                return value
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
