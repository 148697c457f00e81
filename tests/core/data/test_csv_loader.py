from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data import Limits, load_upload
from core.errors import DatasetError
from tests.core.data.files import write_text


def load(tmp_path: Path, text: str, **kwargs: object):
    return load_upload(write_text(tmp_path / "data.csv", text), name="t", **kwargs)  # type: ignore[arg-type]


def error(tmp_path: Path, text: str, **kwargs: object) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load(tmp_path, text, **kwargs)
    return info.value


def test_string_target_becomes_sorted_class_indices(tmp_path: Path) -> None:
    dataset = load(tmp_path, "a,b,label\n1,2,dog\n3,4.5,cat\n5,6,dog\n")
    np.testing.assert_array_equal(dataset.x, [[1, 2], [3, 4.5], [5, 6]])
    assert dataset.x.dtype == np.float32
    assert dataset.y.dtype == np.int32
    np.testing.assert_array_equal(dataset.y, [1, 0, 1])
    info = dataset.info
    assert (info.task, info.num_classes, info.class_names) == ("classification", 2, ["cat", "dog"])
    assert (info.input_shape, info.target_shape, info.num_examples) == ((2,), (), 3)
    assert info.extra == {"feature_names": ["a", "b"], "target_column": "label"}


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    dataset = load(tmp_path, "a,y\n1,10\n2,2\n3,02\n4,-1\n")
    assert dataset.info.class_names == ["-1", "2", "10"]
    np.testing.assert_array_equal(dataset.y, [2, 1, 1, 0])  # "02" and "2" are one class


def test_float_target_is_regression_with_a_target_axis(tmp_path: Path) -> None:
    dataset = load(tmp_path, "a,y\n1,0.5\n2,1\n")
    assert dataset.info.task == "regression"
    assert dataset.info.target_shape == (1,)
    assert dataset.y.dtype == np.float32
    np.testing.assert_array_equal(dataset.y, [[0.5], [1.0]])
    assert dataset.info.num_classes is None and dataset.info.class_names is None


def test_task_overrides_inference(tmp_path: Path) -> None:
    regression = load(tmp_path, "a,y\n1,3\n2,1\n", task="regression")
    np.testing.assert_array_equal(regression.y, [[3.0], [1.0]])
    classification = load(tmp_path, "a,y\n1,0.5\n2,1.5\n3,0.5\n", task="classification")
    assert classification.info.class_names == ["0.5", "1.5"]
    np.testing.assert_array_equal(classification.y, [0, 1, 0])


def test_named_target_column_and_bom_and_blank_lines(tmp_path: Path) -> None:
    dataset = load(tmp_path, "\ufefflabel,a,b\nx,1,2\n\ny,3,4\n", target="label")
    np.testing.assert_array_equal(dataset.x, [[1, 2], [3, 4]])
    assert dataset.info.class_names == ["x", "y"]
    assert dataset.info.extra["feature_names"] == ["a", "b"]


def test_ragged_row_names_its_line(tmp_path: Path) -> None:
    # The blank line 3 still counts: errors use the file's own line numbers.
    exc = error(tmp_path, "a,b,y\n1,2,0\n\n3,4\n")
    assert exc.kind == "invalid"
    assert exc.where == "line 4"
    assert "line 4" in str(exc) and "2 fields" in str(exc)


def test_non_numeric_feature_names_row_and_column(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,b,y\n1,2,0\n3,abc,1\n")
    assert exc.kind == "invalid"
    assert "line 3" in str(exc) and "'b'" in str(exc) and "'abc'" in str(exc)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e39"])
def test_non_finite_feature_names_row_and_column(tmp_path: Path, value: str) -> None:
    exc = error(tmp_path, f"a,b,y\n1,2,0\n3,4,1\n5,{value},1\n")
    assert exc.kind == "invalid"
    assert exc.where == "line 4, column 'b'"
    assert exc.where in str(exc)


def test_missing_target_column_names_it(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,b,y\n1,2,0\n", target="label")
    assert exc.kind == "invalid"
    assert "'label'" in str(exc) and "'y'" in str(exc)  # what is missing, what exists


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", "line 1"),
        ("a,y\n", "line 1"),
        ("y\n1\n", "line 1"),
        ("a,a,y\n1,2,3\n", "line 1"),
        ("a,y\n1,\n", "line 2, column 'y'"),
    ],
    ids=["empty", "header-only", "no-features", "duplicate-column", "empty-target"],
)
def test_malformed_tables(tmp_path: Path, text: str, where: str) -> None:
    exc = error(tmp_path, text)
    assert exc.kind == "invalid"
    assert where in str(exc)


def test_regression_task_with_text_target_names_the_row(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,y\n1,2\n2,cat\n", task="regression")
    assert exc.kind == "invalid"
    assert "line 3" in str(exc) and "'y'" in str(exc)


def test_row_limit(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,y\n1,0\n2,1\n3,0\n", limits=Limits(max_rows=2))
    assert exc.kind == "too_large"
    assert "line 4" in str(exc)


def test_column_limit(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,b,c,y\n1,2,3,0\n", limits=Limits(max_columns=3))
    assert exc.kind == "too_large"
    assert "line 1" in str(exc)


def test_element_limit(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,b,y\n1,2,0\n3,4,1\n", limits=Limits(max_elements=3))
    assert exc.kind == "too_large"
    assert "line 3" in str(exc)


def test_class_limit(tmp_path: Path) -> None:
    exc = error(tmp_path, "a,y\n1,x\n2,y\n3,z\n", limits=Limits(max_classes=2))
    assert exc.kind == "too_large"
    assert "line 4" in str(exc) and "'y'" in str(exc)
    # A numeric column past the class limit can still be a regression target.
    dataset = load(
        tmp_path, "a,y\n1,1\n2,2\n3,3\n", task="regression", limits=Limits(max_classes=2)
    )
    assert dataset.info.task == "regression"


def test_large_csv_crosses_chunks(tmp_path: Path) -> None:
    rows = np.arange(3 * 40_000, dtype=np.float64).reshape(-1, 3)
    text = "a,b,c,y\n" + "".join(f"{a},{b},{c},{int(a) % 3}\n" for a, b, c in rows)
    dataset = load(tmp_path, text)
    np.testing.assert_array_equal(dataset.x, rows.astype(np.float32))
    np.testing.assert_array_equal(dataset.y, rows[:, 0].astype(int) % 3)


def test_non_utf8_bytes_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,y\n1,x\n2,caf\xe9\n")  # Latin-1, not UTF-8
    with pytest.raises(DatasetError) as info:
        load_upload(path, name="t")
    assert info.value.kind == "invalid" and info.value.where == "line 3"


def test_unbalanced_quote_names_its_line(tmp_path: Path) -> None:
    exc = error(tmp_path, 'a,y\n1,x\n"2,y\n3,z\n')  # the quote swallows the rest
    assert exc.kind == "invalid" and exc.where == "line 3" and "quotes" in str(exc)


def test_quoted_multiline_field_keeps_line_numbers(tmp_path: Path) -> None:
    exc = error(tmp_path, 'a,y\n1,"two\nlines"\nbad,x\n')
    assert exc.where == "line 4, column 'a'"
