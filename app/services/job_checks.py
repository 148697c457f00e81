"""The checks a submitted job passes before it is stored: its datasets, its devices and
`init_from`.

Each failure is a `SpecError` whose loc points into the request body (422).
"""

from __future__ import annotations

import threading
from typing import Any

import jax
import numpy as np
from cachetools import LRUCache, cached
from safetensors import safe_open
from sqlalchemy.orm import Session

from app.config import Settings
from app.domain import dataset_store
from app.domain.db.engine import reading
from app.domain.db.models import Job
from app.domain.storage import MissingObject, storage_for
from core.data import BUILDERS, DatasetInfo
from core.errors import FitError, SpecError
from core.fit import fit_check
from core.model import ModelShape, check_shapes
from core.spec import JobSpec
from core.train.data import training_examples
from core.train.parallel import check_batch_splits
from core.train.step import Batching

SHAPE_CHECKS_KEPT = 1024  # distinct (model, loss, dataset shape) checks remembered


def _shape_check_key(spec: JobSpec, info: DatasetInfo) -> tuple[Any, ...]:
    """What `check_shapes` depends on: the model, the loss and the dataset's shapes (a
    sweep's trials differ in hyperparameters, which are not part of it)."""
    return (
        spec.model.model_dump_json(),
        spec.loss.model_dump_json(),
        tuple(info.input_shape),
        tuple(info.target_shape),
        info.num_classes,
        info.task,
    )


@cached(LRUCache(SHAPE_CHECKS_KEPT), key=_shape_check_key, lock=threading.Lock())
def check_model_fits(spec: JobSpec, info: DatasetInfo) -> ModelShape:
    """`core.model.check_shapes`, traced once per distinct key: repeated specs skip the
    `jax.eval_shape` tracing that was most of a submit. Only successes are kept (a
    `SpecError` propagates and is computed again next time)."""
    return check_shapes(spec, info)


def check_limits(settings: Settings, spec: JobSpec, shape: ModelShape) -> None:
    """The server's limits on what one job may ask for (`BACKPROP_MAX_*`): a job over them
    would tie up or crash a worker, so it is refused before it is queued."""
    total = shape.total_parameters
    if total > settings.max_parameters:
        largest = max(shape.parameters, key=lambda name: shape.parameters[name])
        raise SpecError.at(
            ("model",),
            f"the model has {total:,} parameters ({total * 4 / 1e9:.1f} GB as float32; "
            f"{largest} alone has {shape.parameters[largest]:,}); this server takes at most "
            f"{settings.max_parameters:,} (BACKPROP_MAX_PARAMETERS): make the layers smaller",
        )
    if spec.training.epochs > settings.max_epochs:
        raise SpecError.at(
            ("training", "epochs"),
            f"{spec.training.epochs:,} epochs is over this server's limit of "
            f"{settings.max_epochs:,} (BACKPROP_MAX_EPOCHS)",
        )


def check_datasets(session: Session, tenant_id: str, spec: JobSpec) -> DatasetInfo:
    """The training dataset's info; 422 for a dataset (or validation dataset) not found,
    or for a batch its `resources.devices` cannot split (`check_batch_splits_over_devices`,
    which needs the dataset's size)."""
    info = _checked_datasets(session, tenant_id, spec)
    check_batch_splits_over_devices(spec, info)
    return info


def check_batch_splits_over_devices(spec: JobSpec, info: DatasetInfo) -> None:
    """A data-parallel job's global batch must split evenly over its `resources.devices`
    (422 at `training.batch_size`). The batch is `batch_size`, or the whole training set
    when `batch_size` is `"full"` or larger. `"all"` is left to the worker that runs the
    job, which knows its count: it uses the most of its devices that split the batch."""
    devices = spec.resources.fixed_devices
    if devices is None or devices == 1:
        return
    examples = training_examples(spec, info.num_examples)
    batch = Batching.for_size(examples, spec.training.batch_size).size
    check_batch_splits(batch, devices, spec.training.batch_size)


def _checked_datasets(session: Session, tenant_id: str, spec: JobSpec) -> DatasetInfo:
    with reading(session):
        info = dataset_info_or_error(session, tenant_id, spec.dataset, ("dataset",))
        if spec.validation is None or spec.validation.dataset is None:
            return info
        loc = ("validation", "dataset")
        held_out = dataset_info_or_error(session, tenant_id, spec.validation.dataset, loc)
    for what in ("input_shape", "target_shape"):
        if getattr(held_out, what) != getattr(info, what):
            raise SpecError.at(
                loc,
                f"the validation dataset's {what} is {list(getattr(held_out, what))} but the "
                f"training dataset's is {list(getattr(info, what))}; they must match",
            )
    return info


def dataset_info_or_error(
    session: Session, tenant_id: str, ref: str, loc: tuple[str, ...]
) -> DatasetInfo:
    info = dataset_store.dataset_info(session, tenant_id, ref)
    if info is None:
        builtins = ", ".join(dataset_store.BUILTIN_PREFIX + name for name in BUILDERS)
        raise SpecError.at(
            loc,
            f"no dataset {ref!r}: give the id of a dataset you uploaded "
            f"(GET /v1/datasets) or a built-in one ({builtins})",
        )
    return info


def check_init_from(
    settings: Settings, spec: JobSpec, info: DatasetInfo, source: Job | None
) -> None:
    """`init_from.job` (looked up as `source`, None when it is not the tenant's) has a model
    whose tensors fit this spec's model."""
    assert spec.init_from is not None
    loc = ("init_from", "job")
    source_id = spec.init_from.job
    if source is None:
        raise SpecError.at(loc, f"no job {source_id!r}")
    if source.model_path is None:
        raise SpecError.at(
            loc, f"job {source_id} has no trained model to start from (status: {source.status})"
        )
    try:
        model = storage_for(settings).local_path(source.model_path)
    except MissingObject:
        raise SpecError.at(loc, f"the model file of job {source_id} is missing") from None
    # Any other storage error is the server's trouble (503), not this spec's.
    try:
        with safe_open(str(model), framework="numpy") as file:
            # Shapes and dtypes from the header: the tensors themselves are never loaded.
            have = {name: _header_tensor(file.get_slice(name)) for name in file.keys()}  # noqa: SIM118
    except Exception as exc:  # missing or damaged file: either way it cannot be used
        raise SpecError.at(
            loc, f"the model file of job {source_id} cannot be read: {exc}"
        ) from None
    try:
        # Parameters and state together: the file is checked as one set of tensors.
        fit_check(spec, info.input_shape, have)
    except FitError as exc:
        raise SpecError.at(
            loc, f"the model of job {source_id} does not fit this spec: {exc}"
        ) from None


# safetensors dtype codes of the floating types; models written here are all F32, and any
# other code (read as void) fits no model.
_HEADER_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def _header_tensor(tensor: Any) -> jax.ShapeDtypeStruct:
    """A safetensors header entry's shape and dtype, for `fit_check`."""
    dtype = _HEADER_DTYPES.get(tensor.get_dtype(), np.void)
    return jax.ShapeDtypeStruct(tuple(tensor.get_shape()), dtype)
