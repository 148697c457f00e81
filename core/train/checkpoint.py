"""Atomic checkpoints of everything a run needs to continue bit-identically.

A checkpoint is one `.npz` (arrays by pytree path, never pickled) plus JSON metadata in
the same file: epoch, step, PRNG key, metric history and early-stopping state. The next
epoch's data order is `permutation(fold_in(key, epoch))`, so storing the key and the
epoch stores the data order. Files are written to a temp name, fsynced and renamed, so
a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from core.files import write_atomically

_META = "__meta__"
_GROUPS = "__groups__"  # in the metadata: which pytrees the file holds
_NAME = re.compile(r"^ckpt-(\d{6})\.npz$")


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def write_checkpoint_atomically(
    directory: Path, epoch: int, trees: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Write `ckpt-<epoch>.npz` holding each pytree of `trees` and the JSON `meta`."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for group, tree in trees.items():
        arrays.update({f"{group}{path}": leaf for path, leaf in _flatten(tree).items()})
    meta = {**meta, _GROUPS: sorted(trees)}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_atomically(
        directory / f"ckpt-{epoch:06d}.npz",
        lambda file: np.savez(file, allow_pickle=False, **arrays),
    )


def latest_checkpoint(directory: Path | None) -> Path | None:
    if directory is None or not directory.is_dir():
        return None
    found = sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    return found[-1] if found else None


def prune_checkpoints(directory: Path, written: Path, keep: int = 2) -> None:
    """After writing `written`: delete the checkpoints of later epochs (an abandoned
    attempt's, which a resume from an earlier one replaces), then all but the newest `keep`.
    By epoch alone, the file just written could be pruned in favour of such stale ones."""
    found = sorted(p for p in directory.iterdir() if _NAME.match(p.name))
    current = [p for p in found if p.name <= written.name]
    for stale in found[len(current) :]:
        stale.unlink(missing_ok=True)
    for old in current[:-keep]:
        old.unlink(missing_ok=True)


def read_checkpoint(path: Path, templates: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the pytrees named in `templates` (same structure as written) and the metadata.

    A group the file does not hold (e.g. no best parameters yet) is left out of the result.

    Raises:
      ValueError: when the file does not match the templates (another model's checkpoint).
    """
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data[_META]).decode())
        held = set(meta.pop(_GROUPS))
        trees = {}
        for group, template in templates.items():
            if group not in held:
                continue
            leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(template)
            leaves = []
            for key_path, like in leaves_with_path:
                name = f"{group}{jax.tree_util.keystr(key_path)}"
                if name not in data.files:
                    raise ValueError(f"checkpoint {path.name} has no array {name!r}")
                value = data[name]
                if value.shape != np.shape(like):
                    raise ValueError(
                        f"checkpoint array {name!r} has shape {list(value.shape)}, "
                        f"the model needs {list(np.shape(like))}"
                    )
                leaves.append(value)
            trees[group] = jax.tree_util.tree_unflatten(treedef, leaves)
    return trees, meta
