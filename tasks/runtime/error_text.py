"""One line of text for any exception, never empty. No TF, no Luigi.

Most errors carry their message. Some carry none (``raise StopIteration``, ``RuntimeError()``, a library's
re-raise), and a bare "Train failed: " tells nobody anything: those are named by their type and the place that
raised them (the innermost frame of the traceback, as ``file:line in function``), with the message of the error
they were raised from, if any. An error that crosses a process boundary loses its traceback in the pickle:
``keep_description`` writes the description into the exception first (tasks/runtime/fresh_process.py).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

# The attribute an exception's description is kept in (the exception's __dict__ travels with its pickle).
KEPT_DESCRIPTION = "tfpipe_description"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def describe_error(error: BaseException, *, named: bool = False) -> str:
    """``error``'s message (after its type's name when ``named``); for an error without one, its type and where
    it was raised, e.g. ``StopIteration with no message, raised at tasks/training/fit.py:412 in fit``."""
    message = message_of(error)
    if message:
        return f"{type(error).__name__}: {message}" if named else message
    kept = getattr(error, KEPT_DESCRIPTION, "")
    if kept:
        return str(kept)
    location = raising_location(error)
    text = f"{type(error).__name__} with no message, " + (f"raised at {location}" if location else "no traceback")
    cause = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    if cause is not None:
        text += f" (while handling {describe_error(cause, named=True)})"
    return text


def message_of(error: BaseException) -> str:
    """``str(error)`` with surrounding blank space removed; empty when there is none (or it cannot be made)."""
    try:
        return str(error).strip()
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error it belongs to
        return ""


def raising_location(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame of ``error``'s traceback ('' without one); files of the
    project relative to it, of installed packages from their package folder."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f"{short_path(frame.filename)}:{frame.lineno} in {frame.name}"


def short_path(filename: str) -> str:
    """``filename`` relative to the project or to the ``site-packages`` folder holding it, else as it is."""
    path = Path(filename)
    if path.is_relative_to(PROJECT_ROOT) and "site-packages" not in path.parts:
        return path.relative_to(PROJECT_ROOT).as_posix()
    for folder in sys.path:
        if folder.endswith("site-packages") and path.is_relative_to(folder):
            return path.relative_to(folder).as_posix()
    return filename


def keep_description(error: BaseException) -> None:
    """Store the description of a message-less ``error`` in it, where pickling keeps it (its traceback is
    dropped): the process that unpickles it can still say where it was raised."""
    if message_of(error):
        return
    try:
        setattr(error, KEPT_DESCRIPTION, describe_error(error))
    except AttributeError:  # an exception type without a __dict__: its type alone will be shown
        pass
