"""Training data preparation: the validation hold-out and each epoch's order."""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from core.data.dataset import Dataset
from core.errors import SpecError
from core.spec import JobSpec


def split_validation(
    spec: JobSpec, dataset: Dataset, validation_data: Dataset | None
) -> tuple[Dataset, Dataset | None]:
    """(train, validation) per `spec.validation`; a split is held out after a seeded shuffle."""
    if spec.validation is None:
        return dataset, None
    if spec.validation.dataset is not None:
        if validation_data is None:
            raise SpecError.at(("validation", "dataset"), "the validation dataset was not provided")
        if tuple(validation_data.info.input_shape) != tuple(dataset.info.input_shape):
            raise SpecError.at(
                ("validation", "dataset"),
                f"validation examples have shape {list(validation_data.info.input_shape)} but "
                f"training examples have {list(dataset.info.input_shape)}",
            )
        return dataset, validation_data
    split = spec.validation.split
    assert split is not None  # Validation enforces exactly one of split / dataset
    n = len(dataset.x)
    held_out = held_out_count(n, split)
    if held_out >= n:
        raise SpecError.at(
            ("validation", "split"),
            f"a split of {split} leaves no training examples out of {n}",
        )
    order = np.random.default_rng(spec.training.seed).permutation(n)
    val_idx, train_idx = np.sort(order[:held_out]), np.sort(order[held_out:])

    def subset(idx: np.ndarray) -> Dataset:
        info = replace(dataset.info, num_examples=len(idx))
        return Dataset(np.asarray(dataset.x[idx]), np.asarray(dataset.y[idx]), info)

    return subset(train_idx), subset(val_idx)


def held_out_count(num_examples: int, split: float) -> int:
    """How many of `num_examples` a `validation.split` holds out (at least one)."""
    return max(1, round(num_examples * split))


def training_examples(spec: JobSpec, num_examples: int) -> int:
    """How many of a dataset's `num_examples` the run trains on, after its hold-out."""
    if spec.validation is None or spec.validation.split is None:
        return num_examples
    return num_examples - held_out_count(num_examples, spec.validation.split)


def epoch_order(epoch_key: jax.Array, num_examples: int, shuffle: bool) -> jax.Array:
    """The order examples are visited in this epoch, made on the device."""
    if not shuffle:
        return jnp.arange(num_examples)
    return jax.random.permutation(epoch_key, num_examples)
