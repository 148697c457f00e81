"""`fit_check` (core/fit.py): which tensor sets fit a spec's model, and what the errors name."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest

from core.errors import FitError
from core.fit import expected_tensors, fit_check
from core.model import Model
from core.spec import JobSpec, parse_spec

INPUT = (4,)


@pytest.fixture(scope="module")
def spec() -> JobSpec:
    layers = [{"type": "dense", "units": 3}, {"type": "batch_norm"}, {"type": "dense", "units": 2}]
    return parse_spec(
        {"dataset": "builtin:iris", "model": {"layers": layers}, "loss": "cross_entropy"}
    )


@pytest.fixture(scope="module")
def initialised(spec: JobSpec) -> tuple[Any, Any]:
    return Model(spec.model).init(jax.random.PRNGKey(0), INPUT)


def _flat(params: Any, state: Any) -> dict[str, np.ndarray]:
    """Parameters and state as one flat `{name: array}`, the way a model file lists them."""
    return {
        f"{layer}.{name}": np.asarray(a)
        for tree in (params, state)
        for layer, arrays in tree.items()
        for name, a in arrays.items()
    }


def test_the_models_own_tensors_fit(spec: JobSpec, initialised: tuple[Any, Any]) -> None:
    params, state = initialised
    fit_check(spec, INPUT, params, state)  # nested trees, told apart
    fit_check(spec, INPUT, _flat(params, state))  # one flat set, as in a file
    want_params, want_state = expected_tensors(spec, INPUT)
    fit_check(spec, INPUT, want_params, want_state)  # shapes alone (ShapeDtypeStruct)
    assert want_params["dense_0.kernel"].shape == (4, 3)
    assert set(want_state) == {"batch_norm_1.mean", "batch_norm_1.var"}


def test_a_missing_tensor_is_named(spec: JobSpec, initialised: tuple[Any, Any]) -> None:
    tensors = _flat(*initialised)
    del tensors["dense_2.bias"]
    with pytest.raises(FitError, match=r"'dense_2\.bias' is missing; .* expects shape \[2\]"):
        fit_check(spec, INPUT, tensors)


def test_an_extra_tensor_is_named(spec: JobSpec, initialised: tuple[Any, Any]) -> None:
    tensors = {**_flat(*initialised), "dense_2.scale": np.ones(2, np.float32)}
    with pytest.raises(FitError, match=r"'dense_2\.scale' is not part of the spec's model"):
        fit_check(spec, INPUT, tensors)


def test_a_wrong_shape_or_dtype_is_named(spec: JobSpec, initialised: tuple[Any, Any]) -> None:
    params, state = initialised
    wrong = {**_flat(params, state), "dense_0.kernel": np.zeros((4, 5), np.float32)}
    with pytest.raises(
        FitError, match=r"'dense_0\.kernel' has shape \[4, 5\]; .* expects \[4, 3\]"
    ):
        fit_check(spec, INPUT, wrong)
    wide = {**_flat(params, state), "dense_0.bias": np.zeros(3, np.float64)}
    with pytest.raises(FitError, match=r"'dense_0\.bias' is float64; .* expects float32"):
        fit_check(spec, INPUT, wide)


def test_state_given_as_parameters_is_named_once(
    spec: JobSpec, initialised: tuple[Any, Any]
) -> None:
    params, state = initialised
    with pytest.raises(FitError) as caught:
        fit_check(spec, INPUT, _flat(params, state), {})
    message = str(caught.value)
    assert "'batch_norm_1.mean' is stored as a parameter" in message
    assert "missing" not in message  # misfiled, not also reported as absent


def test_every_misfit_is_listed_up_to_a_limit(spec: JobSpec) -> None:
    with pytest.raises(FitError) as caught:
        fit_check(spec, INPUT, {f"dense_9.w{i}": np.zeros(1, np.float32) for i in range(3)})
    message = str(caught.value)
    assert "'dense_9.w0'" in message and "'dense_9.w1'" in message
    assert message.endswith("(and 6 more)")  # 3 unexpected + 8 missing, 5 shown


def test_an_input_shape_the_model_cannot_take(spec: JobSpec) -> None:
    conv = parse_spec(
        {
            "dataset": "builtin:digits",
            "model": {"layers": [{"type": "conv2d", "filters": 2, "kernel_size": 3}]},
            "loss": "mse",
        }
    )
    with pytest.raises(FitError, match=r"input shape \[4\] does not fit the spec's model"):
        fit_check(conv, INPUT, {})
