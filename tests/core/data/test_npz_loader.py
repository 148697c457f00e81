from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.data import Limits, load_upload
from core.errors import DatasetError
from tests.core.data.files import write_npz


def error(path: Path, **kwargs: object) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_upload(path, name="t", **kwargs)  # type: ignore[arg-type]
    return info.value


class _TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that a loader unpickled data."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_integer_targets_are_classes(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float64).reshape(4, 3, 2)
    dataset = load_upload(write_npz(tmp_path / "d.npz", x=x, y=np.array([0, 2, 2, 0])), name="t")
    np.testing.assert_array_equal(dataset.x, x)
    assert dataset.x.dtype == np.float32 and dataset.y.dtype == np.int32
    info = dataset.info
    assert (info.task, info.input_shape, info.target_shape) == ("classification", (3, 2), ())
    assert (info.num_classes, info.class_names) == (3, ["0", "1", "2"])


def test_float_targets_are_regression(tmp_path: Path) -> None:
    x = np.ones((3, 2), np.float32)
    one = load_upload(write_npz(tmp_path / "a.npz", x=x, y=np.array([0.5, 1, 2])), name="t")
    assert one.info.task == "regression" and one.info.target_shape == (1,)
    assert one.y.shape == (3, 1) and one.y.dtype == np.float32
    many = load_upload(write_npz(tmp_path / "b.npz", x=x, y=np.zeros((3, 4))), name="t")
    assert many.info.target_shape == (4,)


def test_task_overrides_inference(tmp_path: Path) -> None:
    x = np.ones((3, 2))
    path = write_npz(tmp_path / "d.npz", x=x, y=np.array([1.0, 0.0, 1.0]))
    assert load_upload(path, name="t", task="classification").info.num_classes == 2
    ints = write_npz(tmp_path / "i.npz", x=x, y=np.array([1, 0, 5]))
    np.testing.assert_array_equal(load_upload(ints, name="t", task="regression").y, [[1], [0], [5]])


def test_truncated_npz(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", x=np.ones((50, 4)), y=np.zeros(50, np.int64))
    path.write_bytes(path.read_bytes()[:700])
    exc = error(path)
    assert exc.kind == "invalid"
    assert "npz" in str(exc) and "truncated or corrupt" in str(exc)


def test_corrupt_member_data(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).normal(size=(200, 8)), y=np.zeros(200))
    data = bytearray(path.read_bytes())
    data[400:600] = bytes(200)  # inside x's compressed bytes; the directory stays intact
    path.write_bytes(bytes(data))
    exc = error(path)
    assert exc.kind == "invalid"
    assert exc.where == "array 'x'" and "corrupt" in str(exc)


def test_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "d.npz"
    x = np.array([_TouchOnUnpickle(marker), 1], dtype=object)
    np.savez(path, x=x, y=np.array([0, 1]), allow_pickle=True)
    exc = error(path)
    assert exc.kind == "invalid"
    assert exc.where == "array 'x'" and "'x'" in str(exc) and "object" in str(exc)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("arrays", "where"),
    [
        ({"x": np.ones((3, 2)), "y": np.zeros(4)}, "arrays 'x', 'y'"),
        ({"x": np.ones((3, 2))}, "array 'y'"),
        ({"features": np.ones((3, 2)), "y": np.zeros(3)}, "array 'x'"),
        ({"x": np.ones(3), "y": np.zeros(3)}, "array 'x'"),
        ({"x": np.array([["a"], ["b"]]), "y": np.zeros(2)}, "array 'x'"),
        ({"x": np.ones((2, 2), np.complex64), "y": np.zeros(2)}, "array 'x'"),
        ({"x": np.array([[1.0], [np.nan]]), "y": np.zeros(2)}, "x[1, 0]"),
        ({"x": np.ones((2, 1)), "y": np.array([0, -1])}, "y[1]"),
        ({"x": np.ones((2, 1)), "y": np.array([[0, 1], [1, 0]])}, "array 'y'"),
        ({"x": np.ones((0, 1)), "y": np.zeros(0)}, "array 'x'"),
    ],
    ids=[
        "length-mismatch",
        "missing-y",
        "missing-x",
        "rank-1-x",
        "text-x",
        "complex-x",
        "nan-x",
        "negative-label",
        "one-hot-y",
        "empty",
    ],
)
def test_inconsistent_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], where: str) -> None:
    exc = error(write_npz(tmp_path / "d.npz", **arrays))
    assert exc.kind == "invalid"
    assert exc.where == where and where in str(exc)


def test_fractional_label_with_classification_task(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", x=np.ones((2, 1)), y=np.array([1.0, 0.5]))
    exc = error(path, task="classification")
    assert exc.kind == "invalid" and "y[1]" in str(exc)


def test_element_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", x=np.ones((10, 10)), y=np.zeros(10))
    exc = error(path, limits=Limits(max_elements=99))
    assert exc.kind == "too_large" and "array 'x'" in str(exc)


def test_row_limit(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", x=np.ones((10, 1)), y=np.zeros(10))
    exc = error(path, limits=Limits(max_rows=9))
    assert exc.kind == "too_large" and "array 'x'" in str(exc)


def test_class_limit(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", x=np.ones((2, 1)), y=np.array([0, 10]))
    exc = error(path, limits=Limits(max_classes=10))
    assert exc.kind == "too_large" and exc.where == "array 'y'" and "11" in str(exc)


def test_member_limit(tmp_path: Path) -> None:
    arrays = {f"extra{i}": np.zeros(1) for i in range(5)}
    path = write_npz(tmp_path / "d.npz", x=np.ones((2, 1)), y=np.zeros(2), **arrays)
    exc = error(path, limits=Limits(max_members=6))
    assert exc.kind == "too_large" and "npz" in str(exc)


def test_highly_compressible_arrays_are_bounded_by_unpacked_size(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.zeros((1000, 100)), y=np.zeros(1000))
    # Zeros compress ~900×: fine for arrays, which the unpacked-size limit bounds instead.
    assert load_upload(path, name="t", limits=Limits(max_compression_ratio=2)).x.shape == (
        1000,
        100,
    )
    exc = error(path, limits=Limits(max_decompressed_bytes=100_000))
    assert exc.kind == "too_large" and exc.where == "member 'x.npy'"


def test_not_a_zip_at_all(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    buffer = io.BytesIO()
    np.save(buffer, np.ones((2, 2)))  # a bare .npy, renamed
    path.write_bytes(buffer.getvalue())
    exc = error(path)
    assert exc.kind == "invalid" and "npz" in str(exc)
    assert not zipfile.is_zipfile(path)
