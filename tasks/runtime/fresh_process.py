"""Run one function in a new Python process, for TensorFlow set-ups that must come before its runtime starts.

MultiWorkerMirroredStrategy configures collective ops, and splitting the CPU into logical devices configures the
devices; TensorFlow allows both only at program start ("Collective ops must be configured at program startup"),
and a Luigi worker that built earlier stages has long started it. The child is spawned (not forked), dies with
its parent (PR_SET_PDEATHSIG, or a watchdog thread), takes the parent's output settings
(``tasks.runtime.quiet``) before it imports the function, sends ``report(...)`` calls back as they happen, and
returns the function's result or re-raises its exception in the parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from tasks.runtime.error_text import describe_error, keep_description
from tasks.runtime.quiet import quiet_this_process

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


def _child(payload: bytes, messages: Any, parent: int) -> None:
    _die_with_parent(parent)
    # Before the function's module is imported (it may import TensorFlow): the parent's output settings.
    quiet_this_process()

    def report(*values: Any) -> None:
        messages.put(("report", values))

    try:
        function, argument = pickle.loads(payload)
        messages.put(("result", function(argument, report)))
    except BaseException as error:  # noqa: BLE001 - every failure goes back to the parent, which re-raises it
        keep_description(error)  # its traceback stays here: where a message-less error was raised goes with it
        messages.put(("error", error if pickles(error) else RuntimeError(describe_error(error, named=True))))


def pickles(value: Any) -> bool:
    """Whether ``value`` pickles (the queue pickles in a thread of its own, where a failure would be lost)."""
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - any failure to pickle means: send the text instead
        return False
    return True


def run_in_fresh_process(function: Callable[[Any, Report], Any], argument: Any,
                         on_report: Callable[..., None] | None = None) -> Any:
    """``function(argument, report)`` in a spawned process; ``report(*values)`` there calls ``on_report(*values)``
    here. ``function`` must be importable by name (a module-level function) and ``argument`` picklable."""
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    # Pickled here, unpickled in the child by ``_child``: unpickling imports the function's module.
    payload = pickle.dumps((function, argument))
    child = context.Process(target=_child, args=(payload, messages, os.getpid()), daemon=True)
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
