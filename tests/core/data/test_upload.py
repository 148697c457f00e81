from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data import (
    LOADERS,
    Dataset,
    Limits,
    infer_format,
    load_upload,
    open_converted,
    save_converted,
)
from core.errors import DatasetError
from tests.core.data.files import two_class_zip, write_npz, write_text


def csv_file(tmp_path: Path) -> Path:
    return write_text(tmp_path / "table.csv", "a,b,label\n1,2,x\n3,4,y\n5,6.5,x\n")


def npz_file(tmp_path: Path) -> Path:
    x = np.arange(12, dtype=np.float64).reshape(3, 2, 2)
    return write_npz(tmp_path / "arrays.npz", x=x, y=np.array([0.5, 1.5, 2.5]))


def zip_file(tmp_path: Path) -> Path:
    return two_class_zip(tmp_path / "images.zip")


MAKERS = {"csv": csv_file, "npz": npz_file, "image_zip": zip_file}


def test_registry_covers_every_format() -> None:
    assert set(LOADERS) == set(MAKERS) == {"csv", "npz", "image_zip"}


@pytest.mark.parametrize(
    ("filename", "format"),
    [("a.csv", "csv"), ("A.CSV", "csv"), ("x.npz", "npz"), ("photos.zip", "image_zip")],
)
def test_format_is_inferred_from_the_name(filename: str, format: str) -> None:
    assert infer_format(filename) == format


@pytest.mark.parametrize("format", sorted(MAKERS))
def test_round_trip_through_converted_storage(tmp_path: Path, format: str) -> None:
    loaded = load_upload(MAKERS[format](tmp_path), name="mine")
    assert loaded.info.format == format and loaded.info.name == "mine"
    assert loaded.x.dtype == np.float32
    assert loaded.y.dtype == (np.int32 if loaded.info.task == "classification" else np.float32)
    directory = save_converted(loaded, tmp_path / "store" / "abc123")
    assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "x.npy", "y.npy"]
    opened = open_converted(directory)
    assert isinstance(opened.x, np.memmap) and isinstance(opened.y, np.memmap)
    assert opened.x.dtype == loaded.x.dtype and opened.y.dtype == loaded.y.dtype
    np.testing.assert_array_equal(opened.x, loaded.x)
    np.testing.assert_array_equal(opened.y, loaded.y)
    assert opened.info == loaded.info


def test_explicit_format_beats_the_name(tmp_path: Path) -> None:
    path = csv_file(tmp_path).rename(tmp_path / "upload.bin")
    assert load_upload(path, name="t", format="csv").info.num_examples == 3
    assert load_upload(path, name="t", filename="table.csv").info.num_examples == 3


@pytest.mark.parametrize(("filename", "format"), [("data.parquet", None), ("a.csv", "xlsx")])
def test_unknown_format(tmp_path: Path, filename: str, format: str | None) -> None:
    path = write_text(tmp_path / filename, "a,b\n1,2\n")
    with pytest.raises(DatasetError) as info:
        load_upload(path, name="t", format=format)
    assert info.value.kind == "unsupported_format" and info.value.where == "format"
    assert "csv" in str(info.value) and "image_zip" in str(info.value)


def test_file_size_limit(tmp_path: Path) -> None:
    path = csv_file(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_upload(path, name="t", limits=Limits(max_bytes=10))
    assert info.value.kind == "too_large" and info.value.where == "upload"
    assert "file size" in str(info.value)


@pytest.mark.parametrize(
    ("option", "where"),
    [({"target": "b"}, "target"), ({"image_size": (2, 2)}, "image_size"), ({"task": "x"}, "task")],
)
def test_options_that_do_not_apply(tmp_path: Path, option: dict[str, object], where: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_upload(npz_file(tmp_path), name="t", **option)  # type: ignore[arg-type]
    assert info.value.kind == "invalid" and info.value.where == where


def test_dataset_contract_still_checks_lengths() -> None:
    with pytest.raises(ValueError, match="x has 2 examples but y has 1"):
        Dataset(np.zeros((2, 1), np.float32), np.zeros(1, np.int32), info=None)  # type: ignore[arg-type]
