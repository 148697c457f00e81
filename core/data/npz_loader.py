"""npz uploads: arrays `x` (features) and `y` (targets), never unpickled."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from core.data.assemble import build_dataset, first_bad_index, to_float32
from core.data.dataset import Dataset, Task
from core.data.limits import LoadRequest, check_limit
from core.data.zip_archive import open_archive, safe_members
from core.errors import DatasetError

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, floating


def load_npz(path: Path, request: LoadRequest) -> Dataset:
    """Load `x` and `y` from an .npz file (numpy.savez or numpy.savez_compressed).

    Each array's header (dtype, shape) is checked before its data is read, so object
    arrays are refused without being unpickled and oversized arrays are never allocated.
    Integer or bool y means classification with num_classes = max(y) + 1 and
    class_names "0".."k-1"; float y means regression; `request.task` overrides that.

    Args:
      path: the uploaded file.
      request: task override and limits.
    Returns:
      Dataset with x float32 [n, *x.shape[1:]] and y int32 [n] (classification) or
      float32 [n, *y.shape[1:]] with at least one target axis (regression).
    """
    limits = request.limits
    with open_archive(path, limits, kind="npz") as archive:
        # No compression-ratio check: numeric arrays (zeros, one-hot) legitimately compress
        # a thousandfold. The unpacked-size limit and the element limit, checked from
        # the headers below, bound the work instead.
        names = {info.filename for info in safe_members(archive, limits, check_ratio=False)}
        for array in ("x", "y"):
            if f"{array}.npy" not in names:
                present = sorted(n.removesuffix(".npy") for n in names) or ["none"]
                raise DatasetError(
                    f"array {array!r} is missing (arrays present: {', '.join(present)}); save "
                    "with numpy.savez(path, x=features, y=targets)",
                    where=f"array {array!r}",
                )
        x_shape = _check_header(archive, "x", limits.max_elements)
        y_shape = _check_header(archive, "y", limits.max_elements)
    if len(x_shape) < 2:
        raise DatasetError(
            f"array 'x' has shape {list(x_shape)}; features need shape [num_examples, ...] "
            "with rank ≥ 2 (for one feature use x.reshape(-1, 1))",
            where="array 'x'",
        )
    if x_shape[0] == 0:
        raise DatasetError("array 'x' holds no examples; add at least one", where="array 'x'")
    if len(y_shape) < 1 or y_shape[0] != x_shape[0]:
        raise DatasetError(
            f"arrays 'x', 'y': x has shape {list(x_shape)} but y has {list(y_shape)}; their "
            "first axes (the number of examples) must match: give one target per example",
            where="arrays 'x', 'y'",
        )
    check_limit(x_shape[0], limits.max_rows, what="the number of examples", where="array 'x'")
    x, y = _read_arrays(path)
    task, y, class_names = _resolve_targets(y, request.task, limits.max_classes)
    return build_dataset(
        to_float32(x, where="x"),
        y,
        request=request,
        format="npz",
        task=task,
        class_names=class_names,
    )


def _check_header(archive: zipfile.ZipFile, array: str, max_elements: int) -> tuple[int, ...]:
    """Read an array's .npy header only: refuse object/non-numeric dtypes and huge sizes."""
    where = f"array {array!r}"
    try:
        with archive.open(f"{array}.npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"{where} is not a readable .npy array ({exc}); the file is truncated or "
            "corrupt — save it again with numpy.savez and upload the whole file",
            where=where,
        ) from exc
    if dtype.hasobject or dtype.kind not in _NUMERIC_KINDS:
        raise DatasetError(
            f"{where} has dtype {dtype} (object/pickled, text or structured data cannot be "
            "loaded safely); convert it to a numeric array, e.g. x.astype(np.float32)",
            where=where,
        )
    check_limit(int(np.prod(shape)), max_elements, what="the number of elements", where=where)
    return tuple(int(d) for d in shape)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    with np.load(path, allow_pickle=False) as npz:
        for name in ("x", "y"):
            try:
                arrays.append(npz[name])
            except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
                raise DatasetError(
                    f"array {name!r} cannot be read ({exc}); the file is truncated or corrupt "
                    "— save it again with numpy.savez and upload the whole file",
                    where=f"array {name!r}",
                ) from exc
    return arrays[0], arrays[1]


def _resolve_targets(
    y: np.ndarray, task: Task | None, max_classes: int
) -> tuple[Task, np.ndarray, list[str] | None]:
    """Returns (task, y, class_names): int32 indices or float32 values."""
    is_integer = y.dtype.kind in "biu"
    if task is None:
        task = "classification" if is_integer else "regression"
    if task == "regression":
        return task, to_float32(y, where="y"), None
    if y.ndim != 1:
        raise DatasetError(
            f"array 'y' has shape {list(y.shape)}; classification needs one class index per "
            "example, shape [num_examples] (for one-hot targets use y.argmax(axis=1))",
            where="array 'y'",
        )
    if not is_integer:
        bad = ~np.isfinite(y) | (y != np.round(np.nan_to_num(y)))
        if bad.any():
            at = first_bad_index(bad)[0]
            raise DatasetError(
                f"y[{at}] is {float(y[at])!r}; class labels must be whole numbers",
                where=f"y[{at}]",
            )
    # Range checks come before the cast, which would wrap huge labels around.
    if y.min() < 0:
        at = int(np.argmin(y))
        raise DatasetError(
            f"y[{at}] is {y[at]}; class labels must be 0, 1, …, num_classes - 1",
            where=f"y[{at}]",
        )
    num_classes = int(y.max()) + 1
    check_limit(
        num_classes,
        max_classes,
        what="the number of classes (max(y) + 1)",
        where="array 'y'",
        fix="y must hold class indices 0..k-1; for a quantity upload with task=regression",
    )
    return task, y.astype(np.int32), [str(k) for k in range(num_classes)]
