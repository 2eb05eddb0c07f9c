"""``labels.csv`` of a captcha set, the seeds' format: a header ``index,label`` then one row per image
(``<index>.png`` beside the CSV). Pure stdlib."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from tasks.formats.errors import FormatError

HEADER = ["index", "label"]
ASCII_INDEX = re.compile(r"[0-9]+")


def write_labels_csv(path: Path, rows: Iterable[tuple[int, str]]) -> int:
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for index, label in rows:
            writer.writerow([index, label])
            count += 1
    return count


def read_labels_csv(path: Path, *, alphabet: str, length: int) -> list[tuple[int, str]]:
    """Rows ``(index, label)``; a bad header, index or label, text that is not UTF-8 or a broken CSV row
    raises FormatError naming the file and the line (or byte offset)."""
    path = Path(path)
    raw = path.read_bytes()  # small (a few bytes per captcha): decoded at once, so a bad byte has an exact offset
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text ({exc.reason})", path=path, offset=exc.start) from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return _checked_rows(reader, path, alphabet=alphabet, length=length)
    except csv.Error as exc:
        raise FormatError(f"line {reader.line_num}: not a valid CSV row ({exc})", path=path,
                          index=reader.line_num) from exc


def _checked_rows(reader: Iterator[list[str]], path: Path, *, alphabet: str, length: int) -> list[tuple[int, str]]:
    rows: list[tuple[int, str]] = []
    seen: set[int] = set()
    header = next(reader, None)
    if header != HEADER:
        raise FormatError(f"header must be {','.join(HEADER)!r}, found {header!r}", path=path, index=1)
    for line_number, row in enumerate(reader, start=2):
        # ASCII digits only: str.isdigit() also accepts '²', which int() then refuses with a bare ValueError
        if len(row) != 2 or not ASCII_INDEX.fullmatch(row[0].strip()):
            raise FormatError(f"line {line_number}: expected '<index>,<label>', found {row!r}", path=path,
                              index=line_number)
        index, label = int(row[0]), row[1].strip()
        if len(label) != length or any(ch not in alphabet for ch in label):
            raise FormatError(f"line {line_number}: label {label!r} is not {length} characters of {alphabet!r}",
                              path=path, index=line_number)
        if index in seen:
            raise FormatError(f"line {line_number}: index {index} appears twice", path=path, index=line_number)
        seen.add(index)
        rows.append((index, label))
    return rows
