"""Built-in datasets (API.md): small, bundled or generated, never downloaded.

- digits: scikit-learn's 8×8 handwritten digits, x [1797, 8, 8, 1] with pixels divided
  by 16 into [0, 1]; 10 classes "0".."9".
- iris [150, 4] (3 classes), wine [178, 13] (3 classes), breast_cancer [569, 30]
  (2 classes): scikit-learn's bundled tables, each feature standardised to zero mean and
  unit variance over the whole dataset (the raw scales differ by orders of magnitude,
  which would make these a test of feature scaling rather than of the network).
- xor: the 4 points of {0, 1}², target x0 XOR x1; 2 classes.
- two_moons [400, 2] and spirals [400, 2]: two interleaved shapes with Gaussian noise,
  2 classes of 200 points, generated from a fixed seed so every call is identical.
- sine: regression, x = 256 evenly spaced points in [-π, π], shape [256, 1], and
  y = sin(x) with shape [256, 1] (target_shape [1]), like every regression target here.
- The 1986 backpropagation problems (Rumelhart, Hinton & Williams), every pattern once,
  inputs 0/1: symmetry [64, 6] (class 1 when the 6 bits read the same backwards), parity
  [16, 4] (class 1 for an odd number of ones) and encoder [8, 8] (one-hot patterns, the
  regression target is the input itself, for an 8-3-8 network).

The datasets are cached and their arrays are read-only: callers share one copy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from core.data.assemble import build_dataset
from core.data.dataset import Dataset, DatasetInfo, Task
from core.data.limits import LoadRequest
from core.errors import DatasetError

_SEED = 0  # fixed, so generated datasets are the same on every machine and every call


def _dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    task: Task,
    class_names: list[str] | None,
    **extra: object,
) -> Dataset:
    return build_dataset(
        np.asarray(x, dtype=np.float32),
        y,
        request=LoadRequest(name=name),
        format="builtin",
        task=task,
        class_names=class_names,
        extra=extra,
    )


def _load_sklearn(name: str) -> Any:
    # Imported on first use: scikit-learn is slow to import and only these builders need it.
    from sklearn import datasets as sklearn_datasets

    return getattr(sklearn_datasets, f"load_{name}")()


def _digits() -> Dataset:
    bunch = _load_sklearn("digits")
    x = bunch.images[..., None] / 16.0  # pixel values are 0..16
    return _dataset("digits", x, bunch.target, "classification", [str(k) for k in range(10)])


def _standardised_table(name: str) -> Callable[[], Dataset]:
    def build() -> Dataset:
        bunch = _load_sklearn(name)
        std = bunch.data.std(axis=0)
        x = (bunch.data - bunch.data.mean(axis=0)) / np.where(std > 0, std, 1.0)
        return _dataset(
            name,
            x,
            bunch.target,
            "classification",
            [str(n) for n in bunch.target_names],
            feature_names=[str(n) for n in bunch.feature_names],
            standardised=True,
        )

    return build


def _xor() -> Dataset:
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    return _dataset("xor", x, np.array([0, 1, 1, 0]), "classification", ["0", "1"])


def _two_moons(seed: int = _SEED, per_class: int = 200, noise: float = 0.1) -> Dataset:
    rng = np.random.default_rng(seed)
    angle = np.linspace(0.0, np.pi, per_class)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    x = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(2 * per_class, 2))
    y = np.repeat([0, 1], per_class)
    return _dataset("two_moons", x, y, "classification", ["0", "1"])


def _spirals(seed: int = _SEED, per_class: int = 200, noise: float = 0.05) -> Dataset:
    rng = np.random.default_rng(seed)
    radius = np.linspace(0.05, 1.0, per_class)
    angle = 3 * np.pi * radius  # one and a half turns per arm
    arms = []
    for arm in range(2):
        turned = angle + arm * np.pi  # the second arm is the first rotated by 180°
        arms.append(np.stack([radius * np.cos(turned), radius * np.sin(turned)], axis=1))
    x = np.concatenate(arms) + rng.normal(scale=noise, size=(2 * per_class, 2))
    y = np.repeat([0, 1], per_class)
    return _dataset("spirals", x, y, "classification", ["0", "1"])


def _sine(num_points: int = 256) -> Dataset:
    x = np.linspace(-np.pi, np.pi, num_points)[:, None]
    return _dataset("sine", x, np.sin(x), "regression", None)


def _bits(width: int) -> np.ndarray:
    """Every pattern of `width` bits, [2^width, width], most significant bit first."""
    codes = np.arange(2**width)[:, None]
    return (codes >> np.arange(width - 1, -1, -1)) & 1


def _symmetry() -> Dataset:
    x = _bits(6)
    y = np.all(x == x[:, ::-1], axis=1).astype(np.int64)
    return _dataset("symmetry", x, y, "classification", ["0", "1"])


def _parity() -> Dataset:
    x = _bits(4)
    return _dataset("parity", x, x.sum(axis=1) % 2, "classification", ["0", "1"])


def _encoder() -> Dataset:
    x = np.eye(8)
    return _dataset("encoder", x, x.astype(np.float32), "regression", None)


# Builtin name (`builtin:<name>` in a job spec) → builder. Adding one is one entry here.
BUILDERS: dict[str, Callable[[], Dataset]] = {
    "digits": _digits,
    "iris": _standardised_table("iris"),
    "wine": _standardised_table("wine"),
    "breast_cancer": _standardised_table("breast_cancer"),
    "xor": _xor,
    "two_moons": _two_moons,
    "spirals": _spirals,
    "sine": _sine,
    "symmetry": _symmetry,
    "parity": _parity,
    "encoder": _encoder,
}


@functools.cache
def load_builtin(name: str) -> Dataset:
    """A built-in dataset by name, built once per process and shared (arrays read-only).

    Returns:
      Dataset with x float32 [n, *input_shape] and y int32 [n] or float32 [n, 1].
    Raises:
      DatasetError: for an unknown name, listing the valid ones.
    """
    if name not in BUILDERS:
        raise DatasetError(
            f"there is no built-in dataset {name!r}; choose one of {', '.join(BUILDERS)}",
            where=f"builtin:{name}",
        )
    dataset = BUILDERS[name]()
    dataset.x.flags.writeable = False
    dataset.y.flags.writeable = False
    return dataset


def list_builtins() -> list[DatasetInfo]:
    """The DatasetInfo of every built-in dataset, in registry order."""
    return [load_builtin(name).info for name in BUILDERS]
