"""CSV uploads: a header row, numeric feature columns and one target column."""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

import numpy as np

from core.data.assemble import FLOAT32_MAX, build_dataset
from core.data.csv_targets import TargetColumn
from core.data.dataset import Dataset
from core.data.limits import LoadRequest, check_limit
from core.errors import DatasetError

# Rows are parsed in chunks of about this many feature values: numpy converts a whole
# chunk at once, and only a chunk that fails is rescanned cell by cell to find the culprit.
_CHUNK_VALUES = 1 << 20


def _error(msg: str, *, line: int, column: str | None = None, kind: str = "invalid") -> NoReturn:
    where = f"line {line}" + (f", column {column!r}" if column is not None else "")
    raise DatasetError(f"{where}: {msg}", kind=kind, where=where)


def load_csv(path: Path, request: LoadRequest) -> Dataset:
    """Parse a CSV file into features and a target.

    Line numbers in errors are the file's own (header = line 1); blank lines are skipped.
    The target is `request.target` or, when absent, the last column; every other column
    is a float feature.

    Args:
      path: the uploaded file (UTF-8, an optional BOM, comma-separated).
      request: target column, task override and limits.
    Returns:
      Dataset with x float32 [rows, num_features] and y int32 [rows] (classification) or
      float32 [rows, 1] (regression); extra holds feature_names and target_column.
    """
    with open(path, "rb") as file:
        return _parse(_rows(file), request)


def _rows(file: BinaryIO) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, fields) for every row; a quoted field may span lines."""
    reader = csv.reader(_decoded_lines(file), strict=True)
    previous_line = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            _error(f"not valid CSV ({exc}); check this row's quotes", line=previous_line + 1)
        yield previous_line + 1, row
        previous_line = reader.line_num


def _decoded_lines(file: BinaryIO) -> Iterator[str]:
    """The file's lines as text, decoded one by one so a bad byte's line is known."""
    for number, raw in enumerate(file, start=1):
        try:
            yield (raw.removeprefix(codecs.BOM_UTF8) if number == 1 else raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            _error(
                f"byte {exc.start + 1} of the line is not UTF-8 text; save the file as UTF-8 CSV",
                line=number,
            )


def _parse(rows: Iterator[tuple[int, list[str]]], request: LoadRequest) -> Dataset:
    limits = request.limits
    _, header = next(rows, (1, None))
    if header is None:
        raise DatasetError(
            "line 1: the file is empty; expected a header row naming the columns, then one "
            "row per example",
            where="line 1",
        )
    names = [name.strip() for name in header]
    check_limit(len(names), limits.max_columns, what="the number of columns", where="line 1")
    target_index = _target_index(names, request.target)
    target = TargetColumn(names[target_index], max_classes=limits.max_classes)
    features = [i for i in range(len(names)) if i != target_index]
    feature_names = [names[i] for i in features]
    chunk_rows = max(1, _CHUNK_VALUES // len(features))
    chunks: list[np.ndarray] = []
    cells: list[list[str]] = []
    targets: list[str] = []
    lines: list[int] = []
    num_rows = 0
    for line, row in rows:
        if not row:
            continue  # blank line
        if len(row) != len(names):
            _error(
                f"has {len(row)} fields but the header (line 1) has {len(names)}; every row "
                "needs one value per column (look for a stray or missing comma)",
                line=line,
            )
        num_rows += 1
        check_limit(num_rows, limits.max_rows, what="the number of rows", where=f"line {line}")
        check_limit(
            num_rows * len(features),
            limits.max_elements,
            what="the number of feature values",
            where=f"line {line}",
        )
        cells.append([row[i] for i in features])
        targets.append(row[target_index])
        lines.append(line)
        if len(cells) == chunk_rows:
            chunks.append(_parse_features(cells, lines, feature_names))
            target.add_chunk(targets, lines)
            cells, targets, lines = [], [], []
    if cells:
        chunks.append(_parse_features(cells, lines, feature_names))
        target.add_chunk(targets, lines)
    if num_rows == 0:
        _error("the header is the only row; add one row per example below it", line=1)
    task, y, class_names = target.resolve(request.task)
    return build_dataset(
        np.concatenate(chunks),
        y,
        request=request,
        format="csv",
        task=task,
        class_names=class_names,
        extra={"feature_names": feature_names, "target_column": names[target_index]},
    )


def _target_index(names: list[str], target: str | None) -> int:
    for index, name in enumerate(names):
        if not name:
            _error(f"column {index + 1} has no name; give every column a header", line=1)
        if name in names[:index]:
            _error(f"column name {name!r} appears twice; rename one of them", line=1)
    if len(names) < 2:
        _error(
            "needs at least two columns: one or more features and a target",
            line=1,
        )
    if target is None:
        return len(names) - 1
    if target not in names:
        shown = ", ".join(map(repr, names[:20])) + (", …" if len(names) > 20 else "")
        raise DatasetError(
            f"line 1: there is no target column {target!r}; the columns are {shown}; "
            "pass one of them as target (or none for the last column)",
            where=f"column {target!r}",
        )
    return names.index(target)


def _parse_features(cells: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    """[rows, features] text → float32, naming the line and column of any bad value."""
    try:
        values = np.array(cells, dtype=np.float64)
    except ValueError:
        values = _parse_cell_by_cell(cells, lines, names)
    bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
        _error(
            f"{cells[row][col].strip()!r} is not a finite float32 number; features must be "
            "finite: fill in or drop missing values",
            line=lines[row],
            column=names[col],
        )
    return values.astype(np.float32)


def _parse_cell_by_cell(cells: list[list[str]], lines: list[int], names: list[str]) -> np.ndarray:
    parsed = []
    for row, line in zip(cells, lines, strict=True):
        for text, name in zip(row, names, strict=True):
            try:
                float(text)
            except ValueError:
                _error(
                    f"{text!r} is not a number; feature columns must be numeric: encode "
                    "categories as numbers (e.g. one column per category) or drop the column",
                    line=line,
                    column=name,
                )
        parsed.append([float(text) for text in row])
    return np.array(parsed, dtype=np.float64)
