"""Quiet, readable output: TensorFlow's start-up chatter and Keras' warnings stay out of tfpipe's own lines.

By default a ``tfpipe`` command shows its own lines, progress and Keras' epoch lines; ``--log-level debug``
shows everything. The noise has three sources, each silenced where it starts:

- TensorFlow's C++ logs (``I0000 ... cpu_feature_guard.cc``, ``tf_record_dataset_op.cc``, gRPC's): the
  variables of ``environment_for`` are set before TensorFlow loads, only where the user has not set them, and
  every process started afterwards (Luigi's forked workers, ``tasks.runtime.fresh_process``) inherits them.
- Lines printed while TensorFlow's native libraries load, before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``
  (the oneDNN notice, absl's "before absl::InitializeLog()" line, CUDA factory registration on GPU builds):
  the first ``import tensorflow`` runs with file descriptor 2 captured, and every captured line that is not
  one of ``STARTUP_NOTICES`` is written back to stderr when the import ends, errors included.
- Python: warnings raised inside keras/tensorflow go to the ``py.warnings`` logger at DEBUG, and the
  ``tensorflow`` and ``absl`` loggers show errors only.

Nothing here imports TensorFlow. ``quiet_output`` is for the ``tfpipe`` process; a fresh child process calls
``quiet_this_process`` (it reads the level from ``LOG_LEVEL_VARIABLE``, which the parent set).
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TextIO

# The level of the running ``tfpipe`` command, for the processes it starts.
LOG_LEVEL_VARIABLE = "TFPIPE_LOG_LEVEL"
# Levels at which nothing is hidden.
VERBOSE_LEVELS = frozenset({"DEBUG", "NOTSET"})
# Lines TensorFlow's libraries print while they load, whatever TF_CPP_MIN_LOG_LEVEL says (it is read later).
STARTUP_NOTICES: tuple[re.Pattern[str], ...] = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"\] oneDNN custom operations are on\.",
    r"cpu_feature_guard\.cc:\d+\]",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"Unable to register cu(DNN|FFT|BLAS) factory: Attempting to register factory for plugin",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"Could not find cuda drivers on your machine, GPU will not be used\.",
    r"TF-TRT Warning: Could not find TensorRT",
))
# Packages whose Python warnings are hidden below debug (they are about TensorFlow's and Keras' internals).
LIBRARY_PACKAGES = ("keras", "tensorflow", "tf_keras", "absl")
# Python loggers of those libraries, and the level they are shown from.
LIBRARY_LOGGERS = ("tensorflow", "absl")
LIBRARY_LOGGER_LEVEL = logging.ERROR
warnings_logger = logging.getLogger("py.warnings")


def is_verbose(log_level: str) -> bool:
    return log_level.strip().upper() in VERBOSE_LEVELS


def environment_for(log_level: str) -> dict[str, str]:
    """The variables TensorFlow and gRPC read at start-up, for ``log_level``."""
    if is_verbose(log_level):
        return {"TF_CPP_MIN_LOG_LEVEL": "0"}
    # 2: TensorFlow's C++ errors only (1 would still show its warnings).
    return {"TF_CPP_MIN_LOG_LEVEL": "2", "GRPC_VERBOSITY": "ERROR"}


def set_defaults(variables: dict[str, str]) -> dict[str, str | None]:
    """Set each variable the user has not set; return the previous value of each one set (None: was unset)."""
    previous: dict[str, str | None] = {}
    for name, value in variables.items():
        if name not in os.environ:
            previous[name] = None
            os.environ[name] = value
    return previous


def restore(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def is_startup_notice(line: str) -> bool:
    return any(pattern.search(line) for pattern in STARTUP_NOTICES)


def without_startup_notices(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not is_startup_notice(line.rstrip("\r\n")))


def flush_stderr() -> None:
    """Python's buffered stderr text goes out before file descriptor 2 changes hands."""
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        stream.flush()


@contextmanager
def startup_notices_hidden() -> Iterator[None]:
    """Capture file descriptor 2 (native libraries write there, not to ``sys.stderr``) for the block; when it
    ends, even by an exception, write back every captured line but the start-up notices. (Only a crash of the
    process inside the block would lose them: ``--log-level debug`` captures nothing.)"""
    flush_stderr()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon, pythonw): nothing to hide
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            flush_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = without_startup_notices(captured.read().decode("utf-8", errors="replace"))
            if kept:
                os.write(2, kept.encode("utf-8"))


class QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the path finder does, and runs its ``__init__`` inside ``startup_notices_hidden``
    (then ``after_import``). It leaves ``sys.meta_path`` once TensorFlow is imported."""

    def __init__(self, after_import: Callable[[], None]) -> None:
        self.after_import = after_import

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return None  # not a plain installed package: import it the ordinary way, notices and all
        exec_module = loader.exec_module

        def exec_quietly(module: ModuleType) -> None:
            self.leave()
            with startup_notices_hidden():
                exec_module(module)
            self.after_import()

        # This loader instance only: it loads nothing but tensorflow/__init__.
        loader.exec_module = exec_quietly  # type: ignore[method-assign]  # an instance patch, on purpose
        return spec

    def leave(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


@functools.lru_cache(maxsize=1)
def library_directories() -> tuple[str, ...]:
    """The installed folders of ``LIBRARY_PACKAGES``, found by path alone (nothing is imported)."""
    found = []
    for package in LIBRARY_PACKAGES:
        spec = importlib.machinery.PathFinder.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            found.append(os.path.join(os.path.realpath(location), ""))
    return tuple(found)


def from_library(filename: str) -> bool:
    """Whether a warning points into one of ``LIBRARY_PACKAGES`` (one raised about tfpipe's own call to Keras,
    with a ``stacklevel`` that points at tfpipe's file, is not)."""
    return os.path.realpath(filename).startswith(library_directories())


class LibraryWarningsToLog:
    """``warnings.showwarning`` that sends the libraries' warnings to ``py.warnings`` at DEBUG and shows the
    others as before."""

    def __init__(self, show: Callable[..., None]) -> None:
        self.show = show

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
        if from_library(filename):
            warnings_logger.debug("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())
        else:
            self.show(message, category, filename, lineno, file, line)


class QuietProcess:
    """The Python side of quiet output in this process; ``undo`` puts back what it changed."""

    def __init__(self) -> None:
        self.logger_levels: dict[str, int] = {}
        self.showwarning: LibraryWarningsToLog | None = None
        self.finder: QuietTensorFlowImport | None = None

    def quiet_library_loggers(self) -> None:
        """``absl`` only once absl's logging is imported: a logger made earlier would not be absl's own class."""
        for name in LIBRARY_LOGGERS:
            if name == "absl" and "absl.logging" not in sys.modules:
                continue
            library_logger = logging.getLogger(name)
            self.logger_levels.setdefault(name, library_logger.level)
            library_logger.setLevel(max(library_logger.level, LIBRARY_LOGGER_LEVEL))

    def apply(self) -> None:
        self.quiet_library_loggers()
        self.showwarning = LibraryWarningsToLog(warnings.showwarning)
        warnings.showwarning = self.showwarning
        if "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() not in ("", "0"):
            # (a user who asked TensorFlow for its INFO lines with TF_CPP_MIN_LOG_LEVEL=0 gets these too)
            self.finder = QuietTensorFlowImport(after_import=self.quiet_library_loggers)
            sys.meta_path.insert(0, self.finder)

    def undo(self) -> None:
        if self.finder is not None:
            self.finder.leave()
        if self.showwarning is not None and warnings.showwarning is self.showwarning:
            warnings.showwarning = self.showwarning.show
        for name, level in self.logger_levels.items():
            logging.getLogger(name).setLevel(level)


def quiet_this_process() -> QuietProcess | None:
    """Quiet this process's Python side if a ``tfpipe`` command below debug started it (``LOG_LEVEL_VARIABLE``).
    Call it before TensorFlow is imported."""
    level = os.environ.get(LOG_LEVEL_VARIABLE)
    if not level or is_verbose(level):
        return None
    process = QuietProcess()
    process.apply()
    return process


@contextmanager
def quiet_output(log_level: str) -> Iterator[None]:
    """One ``tfpipe`` command's output at ``log_level`` (Luigi's names; ``debug`` or ``notset`` show everything):
    the environment for TensorFlow and the processes to come, and this process's Python side."""
    previous = set_defaults(environment_for(log_level))
    previous[LOG_LEVEL_VARIABLE] = os.environ.get(LOG_LEVEL_VARIABLE)
    os.environ[LOG_LEVEL_VARIABLE] = log_level.strip().upper()
    process = quiet_this_process()
    try:
        yield
    finally:
        if process is not None:
            process.undo()
        restore(previous)

