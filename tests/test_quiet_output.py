"""Quiet, readable output (tasks/runtime/quiet.py): by default ``tfpipe`` shows its own lines and Keras' epoch lines,
without TensorFlow's start-up logs or the libraries' warnings; ``--log-level debug`` shows everything.

The end-to-end tests run the real CLI in subprocesses (TensorFlow is not yet imported there, and no test
environment variable such as conftest's TF_CPP_MIN_LOG_LEVEL is passed on)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from pipelines import cli
from tasks.runtime import quiet
from tests.conftest import REPO

TINY = ["--set", "GenerateCaptchas.count=160", "--set", "Train.epochs=1", "--set", "Train.batch_size=32"]
# What the README's main command printed before: TensorFlow's C++ logs and the libraries' Python warnings.
NOISE = ("oneDNN", "absl::InitializeLog", "cpu_feature_guard", "To enable the following instructions",
         "tf_record_dataset_op", "UserWarning", "Your input ran out of data", "shuffle=True", "WARNING:tensorflow")
# A line of TensorFlow's C++ (absl) log: ``I0000 00:00:1796646237.602940    3108 port.cc:153] ...``.
TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] ", re.MULTILINE)
# Keras' line at the end of each epoch (``fit(verbose=2)``): ``5/5 - 6s - 1s/step - accuracy: ... - loss: ...``.
EPOCH_LINE = re.compile(r"^\d+/\d+ - \d+m?s - .*\bloss: ", re.MULTILINE)
# Real lines captured while TensorFlow 2.21 loaded (tasks/runtime/quiet.py hides them).
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    "I0000 00:00:1796646237.602940    3108 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n",
    "I0000 00:00:1796646237.637948    3108 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.\n",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.\n",
    "E0000 00:00:1723510912.345678    1234 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to "
    "register factory for plugin cuDNN when one has already been registered\n",
]


def tfpipe(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``tfpipe`` command (or ``python -m pipelines.cli``) with the user's plain environment."""
    script = Path(sys.executable).with_name("tfpipe")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]
    clean = {name: value for name, value in os.environ.items()
             if name not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY", "PYTHONWARNINGS", quiet.LOG_LEVEL_VARIABLE)}
    return subprocess.run([*command, *args], cwd=cwd, env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=600)


def noise_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line for word in NOISE) or TF_LOG_LINE.match(line)]


@pytest.fixture(scope="module")
def default_run(captcha_tiny_run) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The README's main command on a tiny dataset, at the default log level: the session's run through ``tfpipe``
    above (tests/conftest.py, shared with tests/test_captcha_pipeline.py)."""
    return captcha_tiny_run


def test_a_default_run_shows_its_own_lines_and_the_epochs_without_tensorflow_noise(default_run) -> None:
    _, done = default_run
    assert noise_in(done.stdout + done.stderr) == []
    assert "tfpipe: captcha done up to the last stage" in done.stdout
    assert EPOCH_LINE.search(done.stdout), done.stdout
    assert re.search(r"^model: .*Freeze-", done.stdout, re.MULTILINE)


def test_predict_prints_predictions_without_tensorflow_noise(default_run) -> None:
    root, _ = default_run
    [frozen] = (root / "freeze").glob("Freeze-*")
    image = sorted((root / "generate").glob("*/images/*.png"))[0]
    done = tfpipe("predict", str(frozen), str(image), cwd=root.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert noise_in(done.stdout + done.stderr) == []
    assert re.fullmatch(rf"{re.escape(str(image))}: [A-Z]{{4}} \(.*\)\n", done.stdout)


@pytest.mark.slow  # trains again in a process of its own. In the default suite: what debug sets and leaves
# (test_environment_is_set_only_where_the_user_left_it_unset), library warnings to the log at debug
# (test_library_warnings_go_to_the_log_at_debug_and_others_show)
def test_log_level_debug_lets_tensorflow_and_luigi_logs_through(default_run, tmp_path: Path) -> None:
    """Only training reruns (another seed): TensorFlow's C++ log lines, the libraries' warnings, Luigi's DEBUG."""
    root = tmp_path / "artifacts"
    shutil.copytree(default_run[0], root)  # the shared run stays as it is
    done = tfpipe("run", "captcha", "--artifacts", str(root), *TINY, "--set", "Train.seed=1", "--until", "train",
                  "--log-level", "debug", cwd=root.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert TF_LOG_LINE.search(done.stderr), done.stderr[-3000:]
    assert "DEBUG: " in done.stderr
    assert EPOCH_LINE.search(done.stdout)


# ---- the parts, without TensorFlow ---------------------------------------------------------------------------
def test_environment_is_set_only_where_the_user_left_it_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delenv(quiet.LOG_LEVEL_VARIABLE, raising=False)
    with quiet.quiet_output("warning"):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
        assert os.environ["GRPC_VERBOSITY"] == "DEBUG"
        assert os.environ[quiet.LOG_LEVEL_VARIABLE] == "WARNING"
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and quiet.LOG_LEVEL_VARIABLE not in os.environ
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"
    with quiet.quiet_output("debug"):
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
        assert quiet.quiet_this_process() is None  # debug: a child process changes nothing


def test_startup_notices_are_dropped_and_every_other_line_kept() -> None:
    error = "E0000 00:00:1796646258.526648    3108 some_op.cc:42] a real error\n"
    text = "".join(STARTUP_LINES) + error + "Traceback (most recent call last):\n" + "partial"
    assert quiet.without_startup_notices(text) == error + "Traceback (most recent call last):\n" + "partial"


def test_native_writes_to_stderr_are_filtered_while_tensorflow_loads(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImportError), quiet.startup_notices_hidden():
        os.write(2, "".join(STARTUP_LINES).encode() + b"kept: the import failed\n")
        raise ImportError("a broken install")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept: the import failed\nafter\n"


def test_library_warnings_go_to_the_log_at_debug_and_others_show(caplog: pytest.LogCaptureFixture) -> None:
    shown: list[str] = []
    show = quiet.LibraryWarningsToLog(lambda message, *rest: shown.append(str(message)))
    [keras_dir] = [d for d in quiet.library_directories() if d.rstrip(os.sep).endswith("keras")]
    with caplog.at_level(logging.DEBUG, logger="py.warnings"):
        show(UserWarning("Your input ran out of data"), UserWarning, os.path.join(keras_dir, "src", "x.py"), 1)
        show(UserWarning("tfpipe's own"), UserWarning, str(REPO / "tasks" / "train.py"), 1)
    assert shown == ["tfpipe's own"]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]
    assert "Your input ran out of data" in caplog.records[0].getMessage()


def test_quiet_process_undoes_what_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(quiet.LOG_LEVEL_VARIABLE, "WARNING")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    tf_logger = logging.getLogger("tensorflow")
    level, meta_path = tf_logger.level, list(sys.meta_path)
    with warnings.catch_warnings():
        original = warnings.showwarning
        process = quiet.quiet_this_process()
        assert process is not None and isinstance(warnings.showwarning, quiet.LibraryWarningsToLog)
        assert tf_logger.getEffectiveLevel() >= logging.ERROR
        process.undo()
        assert warnings.showwarning is original
    assert tf_logger.level == level and sys.meta_path == meta_path


def test_log_level_takes_any_case() -> None:
    assert cli.build_parser().parse_args(["run", "captcha", "--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "captcha", "--log-level", "loud"])
