"""The target column of a CSV upload: class labels or regression values.

Rules (API.md): a string or integer column becomes class indices, with `class_names`
in index order — strings sorted as text, integers sorted numerically; a column with any
non-integer number is a regression target. An explicit `task` overrides the inference,
e.g. integer targets treated as regression values.
"""

from __future__ import annotations

import math
import re
from array import array

import numpy as np

from core.data.assemble import FLOAT32_MAX
from core.data.dataset import Task
from core.errors import DatasetError

_INTEGER = re.compile(r"[+-]?[0-9]+")


class TargetColumn:
    """Accumulates a CSV target column chunk by chunk, then resolves the task.

    Memory stays proportional to the rows, not to their text: each row keeps only the id
    of its distinct label (tracked up to `max_classes`) and, while the column is numeric,
    its float value.
    """

    def __init__(self, column: str, *, max_classes: int):
        self.column = column
        self.max_classes = max_classes
        self._ids: dict[str, int] = {}  # distinct label text -> first-seen id
        self._row_ids = array("q")
        self._lines = array("q")  # file line of each row, for error messages
        self._numbers: list[np.ndarray] = []
        self._first_non_number: tuple[int, str] | None = None  # (line, text)
        self._first_overflow_line: int | None = None
        self._all_integers = True

    def add_chunk(self, texts: list[str], lines: list[int]) -> None:
        """Add one chunk of target cells (raw text) and their 1-based file lines."""
        for text, line in zip(texts, lines, strict=True):
            label = text.strip()
            if not label:
                raise DatasetError(
                    f"line {line}, column {self.column!r}: the target is empty; "
                    "fill in every target value or drop the row",
                    where=f"line {line}, column {self.column!r}",
                )
            label_id = self._ids.get(label)
            if label_id is None:
                self._all_integers = self._all_integers and bool(_INTEGER.fullmatch(label))
                if len(self._ids) < self.max_classes:
                    label_id = self._ids[label] = len(self._ids)
                else:
                    label_id = -1  # past the class limit: only regression remains possible
                    if self._first_overflow_line is None:
                        self._first_overflow_line = line
            self._row_ids.append(label_id)
        self._lines.extend(lines)
        if self._first_non_number is None:
            self._add_numbers(texts, lines)

    def _add_numbers(self, texts: list[str], lines: list[int]) -> None:
        try:
            self._numbers.append(np.array(texts, dtype=np.float64))
            return
        except ValueError:
            pass
        for text, line in zip(texts, lines, strict=True):
            try:
                float(text)
            except ValueError:
                self._first_non_number = (line, text)
                self._numbers.clear()  # a text column: the numbers are never needed
                return
        # numpy refused a spelling that float() accepts; fall back to float().
        self._numbers.append(np.array([float(t) for t in texts], dtype=np.float64))

    def resolve(self, task: Task | None) -> tuple[Task, np.ndarray, list[str] | None]:
        """Decide the task and build y.

        Returns:
          (task, y, class_names): y is int32 [num_rows] with class_names for
          classification, float32 [num_rows] with class_names None for regression.
        """
        numeric = self._first_non_number is None
        if task is None:
            task = "regression" if numeric and not self._all_integers else "classification"
        if task == "regression":
            return task, self._regression_values(), None
        return task, *self._class_indices(numeric)

    def _regression_values(self) -> np.ndarray:
        if self._first_non_number is not None:
            line, text = self._first_non_number
            raise DatasetError(
                f"line {line}, column {self.column!r}: target {text!r} is not a number; "
                "a regression target must be numeric (leave task unset to use the column "
                "as class labels)",
                where=f"line {line}, column {self.column!r}",
            )
        values = np.concatenate(self._numbers)
        bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
        if bad.any():
            line = self._lines[int(np.argmax(bad))]
            raise DatasetError(
                f"line {line}, column {self.column!r}: target {values[np.argmax(bad)]!s} is "
                "not a finite float32 number; fix or drop the row",
                where=f"line {line}, column {self.column!r}",
            )
        return values.astype(np.float32)

    def _class_indices(self, numeric: bool) -> tuple[np.ndarray, list[str]]:
        if self._first_overflow_line is not None:
            line = self._first_overflow_line
            raise DatasetError(
                f"line {line}, column {self.column!r}: more than {self.max_classes:,} "
                "distinct class labels, above this service's limit; if the column is a "
                "quantity upload it with task=regression, otherwise choose another target "
                "column",
                kind="too_large",
                where=f"line {line}, column {self.column!r}",
            )
        labels = list(self._ids)  # in id order
        keys: list[int] | list[float] | list[str]
        if numeric and self._all_integers:
            keys = [int(label) for label in labels]
        elif numeric:  # float labels, classification forced by task
            keys = [float(label) for label in labels]
            for label, key in zip(labels, keys, strict=True):
                if not math.isfinite(key):
                    raise DatasetError(
                        f"column {self.column!r}: class label {label!r} is not a finite "
                        "number; fix or drop those rows",
                        where=f"column {self.column!r}",
                    )
        else:
            keys = labels
        classes = sorted(set(keys))  # type: ignore[type-var]
        index_of = {key: index for index, key in enumerate(classes)}
        # Two spellings of one number ("1", "01") share a class.
        remap = np.array([index_of[key] for key in keys], dtype=np.int32)
        y = remap[np.frombuffer(self._row_ids, dtype=np.int64)]
        names = [repr(k) if isinstance(k, float) else str(k) for k in classes]
        return y, names
