from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from core.data import Dataset, load_builtin, open_converted, save_converted


def test_round_trip_keeps_arrays_and_info(tmp_path: Path) -> None:
    digits = load_builtin("digits")
    opened = open_converted(save_converted(digits, tmp_path / "digits"))
    np.testing.assert_array_equal(opened.x, digits.x)
    np.testing.assert_array_equal(opened.y, digits.y)
    assert opened.info == digits.info
    assert not opened.x.flags.writeable  # memory-mapped read-only


def test_existing_directory_is_never_overwritten(tmp_path: Path) -> None:
    target = save_converted(load_builtin("xor"), tmp_path / "xor")
    before = (target / "x.npy").read_bytes()
    with pytest.raises(FileExistsError):
        save_converted(load_builtin("sine"), target)
    assert (target / "x.npy").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["xor"]  # no staging directory left


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    xor = load_builtin("xor")
    info = dataclasses.replace(xor.info, extra={"not json": object()})
    with pytest.raises(TypeError):
        save_converted(Dataset(x=xor.x, y=xor.y, info=info), tmp_path / "broken")
    assert list(tmp_path.iterdir()) == []


def test_damaged_directory_is_detected(tmp_path: Path) -> None:
    directory = save_converted(load_builtin("xor"), tmp_path / "xor")
    meta = json.loads((directory / "meta.json").read_text())
    meta["info"]["num_examples"] = 5
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"meta\.json says"):
        open_converted(directory)
    meta["version"] = 99
    (directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unsupported version"):
        open_converted(directory)
