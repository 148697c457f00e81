from __future__ import annotations

import numpy as np
import pytest

from core.data import BUILDERS, list_builtins, load_builtin
from core.errors import DatasetError

# name: (num_examples, input_shape, target_shape, num_classes) as API.md and the docs say
EXPECTED = {
    "digits": (1797, (8, 8, 1), (), 10),
    "iris": (150, (4,), (), 3),
    "wine": (178, (13,), (), 3),
    "breast_cancer": (569, (30,), (), 2),
    "xor": (4, (2,), (), 2),
    "two_moons": (400, (2,), (), 2),
    "spirals": (400, (2,), (), 2),
    "sine": (256, (1,), (1,), None),
    "symmetry": (64, (6,), (), 2),
    "parity": (16, (4,), (), 2),
    "encoder": (8, (8,), (8,), None),
}


def test_every_builtin_is_documented() -> None:
    assert list(BUILDERS) == list(EXPECTED)
    assert [info.name for info in list_builtins()] == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_documented_shapes(name: str) -> None:
    dataset = load_builtin(name)
    info = dataset.info
    num_examples, input_shape, target_shape, num_classes = EXPECTED[name]
    assert (info.num_examples, info.input_shape, info.target_shape) == (
        num_examples,
        input_shape,
        target_shape,
    )
    assert info.num_classes == num_classes and info.format == "builtin"
    assert dataset.x.shape == (num_examples, *input_shape) and dataset.x.dtype == np.float32
    assert dataset.y.shape == (num_examples, *target_shape)
    assert np.isfinite(dataset.x).all()
    if num_classes is None:
        assert info.task == "regression" and dataset.y.dtype == np.float32
    else:
        assert info.task == "classification" and dataset.y.dtype == np.int32
        assert info.class_names is not None and len(info.class_names) == num_classes
        assert set(np.unique(dataset.y)) == set(range(num_classes))


def test_digits_pixels_are_scaled_to_unit_range() -> None:
    x = load_builtin("digits").x
    assert x.min() == 0.0 and x.max() == 1.0
    assert load_builtin("digits").info.class_names == [str(k) for k in range(10)]


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer"])
def test_tables_are_standardised(name: str) -> None:
    x = load_builtin(name).x
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=1e-4)


def test_xor_and_sine_values() -> None:
    xor = load_builtin("xor")
    np.testing.assert_array_equal(xor.x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(xor.y, [0, 1, 1, 0])
    sine = load_builtin("sine")
    assert sine.x.min() == pytest.approx(-np.pi) and sine.x.max() == pytest.approx(np.pi)
    np.testing.assert_allclose(sine.y, np.sin(sine.x), atol=1e-6)


def test_the_1986_problems_hold_every_pattern_once() -> None:
    symmetry, parity, encoder = (load_builtin(n) for n in ("symmetry", "parity", "encoder"))
    for dataset, width in ((symmetry, 6), (parity, 4)):
        assert len({tuple(row) for row in dataset.x.tolist()}) == 2**width
        assert set(np.unique(dataset.x)) == {0.0, 1.0}
    assert symmetry.y.sum() == 8  # 2³ mirror-symmetric patterns of 6 bits
    np.testing.assert_array_equal(symmetry.y, (symmetry.x == symmetry.x[:, ::-1]).all(axis=1))
    np.testing.assert_array_equal(parity.y, parity.x.sum(axis=1) % 2)
    np.testing.assert_array_equal(encoder.x, np.eye(8))
    np.testing.assert_array_equal(encoder.y, encoder.x)


@pytest.mark.parametrize("name", ["two_moons", "spirals"])
def test_generated_datasets_are_reproducible(name: str) -> None:
    again = BUILDERS[name]()  # bypasses the cache
    np.testing.assert_array_equal(again.x, load_builtin(name).x)


def test_cached_and_read_only() -> None:
    dataset = load_builtin("iris")
    assert load_builtin("iris") is dataset
    with pytest.raises(ValueError, match="read-only"):
        dataset.x[0, 0] = 1.0


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(DatasetError) as info:
        load_builtin("mnist")
    assert info.value.where == "builtin:mnist"
    assert "'mnist'" in str(info.value)
    assert all(name in str(info.value) for name in EXPECTED)
