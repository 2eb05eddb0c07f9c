"""``labels.csv`` of a captcha set, the seeds' format: a header ``index,label`` then one row per image
(``<index>.png`` beside the CSV). Pure stdlib."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from tasks.formats.errors import FormatError

HEADER = ["index", "label"]


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
    """Rows ``(index, label)``; a bad header, index or label raises FormatError naming the line."""
    path = Path(path)
    rows: list[tuple[int, str]] = []
    seen: set[int] = set()
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != HEADER:
            raise FormatError(f"header must be {','.join(HEADER)!r}, found {header!r}", path=path, index=1)
        for line_number, row in enumerate(reader, start=2):
            if len(row) != 2 or not row[0].strip().isdigit():
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
