"""Data parallel over the local devices of one process: `Placement.for_spec(spec, batch)`.

With N > 1 devices the run builds a `jax.sharding.Mesh` over the first N local devices
and one axis, `data`. Parameters, model and optimizer state, the data set and every
program output are replicated (`NamedSharding(mesh, P())`); inside the compiled programs
each batch's example indices and weights are constrained to be split along `data`
(`NamedSharding(mesh, P("data"))`), so every device gathers and runs its slice of the
batch and `jit` inserts the all-reduce of the gradient (and of batch norm's statistics,
which stay those of the whole global batch). The programs are the same chunked scans as on
one device; with N == 1 nothing here touches them (`Placement.single()`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from core.errors import SpecError
from core.spec import JobSpec

DATA_AXIS = "data"
DEVICES_LOC = ("resources", "devices")


@dataclass(frozen=True, eq=False)
class Placement:
    """Where a run's arrays live: one device (`mesh` None), or replicated over a mesh
    whose `data` axis splits each batch."""

    mesh: Mesh | None = None

    @classmethod
    def single(cls) -> Placement:
        return cls(None)

    @classmethod
    def over(cls, devices: list[Any]) -> Placement:
        """A placement over `devices` (one device: `single()`, today's path)."""
        if len(devices) == 1:
            return cls.single()
        return cls(Mesh(np.asarray(devices), (DATA_AXIS,)))

    @classmethod
    def for_spec(cls, spec: JobSpec, batch_size: int) -> Placement:
        """The placement for `spec.resources.devices` on this process's local devices, for
        a global batch of `batch_size` examples.

        `"all"` takes the most local devices that split the batch evenly (all of them when
        the batch divides; the submit check cannot know the worker's count).

        Raises:
          SpecError: more devices asked for than this process has, or a batch that the
            devices do not split evenly (at `training.batch_size`).
        """
        local = jax.local_devices()
        asked = spec.resources.fixed_devices
        if asked is None:
            count = max(n for n in range(1, len(local) + 1) if batch_size % n == 0)
            return cls.over(local[:count])
        if asked > len(local):
            kind = local[0].platform
            raise SpecError.at(
                DEVICES_LOC,
                f"the job asks for {asked} devices but this worker has {len(local)} "
                f"{kind} device{'s' if len(local) != 1 else ''}: ask for at most "
                f'{len(local)}, or for "all"',
            )
        check_batch_splits(batch_size, asked, spec.training.batch_size)
        return cls.over(local[:asked])

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    @property
    def batch_sharding(self) -> NamedSharding | None:
        """How a batch's leading axis is split (None on one device: no constraint)."""
        return None if self.mesh is None else NamedSharding(self.mesh, P(DATA_AXIS))

    @property
    def replicated(self) -> NamedSharding | None:
        return None if self.mesh is None else NamedSharding(self.mesh, P())

    def put(self, tree: Any) -> Any:
        """`tree` replicated on every device of the mesh; unchanged on one device."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, self.replicated)

    def jit(self, fn: Callable[..., Any], **options: Any) -> Any:
        """`jax.jit(fn, **options)`; over a mesh its outputs are replicated, so the state a
        program returns is placed as the state it took (and donation reuses the buffers)."""
        if self.mesh is None:
            return jax.jit(fn, **options)
        return jax.jit(fn, out_shardings=self.replicated, **options)

    def eval_batch(self, size: int) -> int:
        """An evaluation batch of at least `size` rounded up to a multiple of the devices:
        the rows past the data set's end are weight-0 padding, so the sums are unchanged."""
        return -(-size // self.devices) * self.devices


def check_batch_splits(batch: int, devices: int, batch_size: int | str) -> None:
    """Raise a `SpecError` at `training.batch_size` unless `devices` split the global
    `batch` evenly; `batch_size` is the spec's field, which differs from `batch` when it is
    `"full"` or more than the training examples (the batch is then all of them)."""
    if batch % devices == 0:
        return
    lower = batch // devices * devices
    upper = lower + devices
    fixes = f"{upper}" if lower == 0 else f"{lower} or {upper}"
    why = "" if batch_size == batch else f" (batch_size {batch_size!r}: all the training set)"
    raise SpecError.at(
        ("training", "batch_size"),
        f"a batch of {batch} examples{why} does not split evenly over {devices} devices: "
        f"batch_size is the global batch, cut into {devices} equal parts. Use a batch_size "
        f"that is a multiple of {devices}, e.g. {fixes}, or change resources.devices",
    )
