"""Trimming a training history.csv on resume keeps its bytes: CSVLogger's \r\n line ends included."""

from __future__ import annotations

from pathlib import Path

from tasks.training.fit import forget_epochs_from

HEADER = b"epoch,accuracy,loss\r\n"
ROWS = [b"0,0.5,1.25\r\n", b"1,0.625,1.0\r\n", b"2,0.75,0.5\r\n"]


def write_history(work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    history = work / "history.csv"
    history.write_bytes(HEADER + b"".join(ROWS))
    return history


def test_resuming_after_the_last_logged_epoch_leaves_the_file_byte_for_byte(tmp_path: Path) -> None:
    history = write_history(tmp_path)
    forget_epochs_from(tmp_path, 3)
    assert history.read_bytes() == HEADER + b"".join(ROWS)


def test_resuming_mid_history_drops_the_later_rows_and_keeps_the_line_ends(tmp_path: Path) -> None:
    history = write_history(tmp_path)
    forget_epochs_from(tmp_path, 1)
    assert history.read_bytes() == HEADER + ROWS[0]
    assert not (tmp_path / "history.tmp").exists()


def test_starting_over_forgets_the_history(tmp_path: Path) -> None:
    history = write_history(tmp_path)
    (tmp_path / "tensorboard").mkdir()
    forget_epochs_from(tmp_path, 0)
    assert not history.exists() and not (tmp_path / "tensorboard").exists()
