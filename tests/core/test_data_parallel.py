"""Data parallel (`resources.devices`): N devices train as one device does.

XLA's device count is fixed when JAX starts, so the runs happen in one child process with
`XLA_FLAGS=--xla_force_host_platform_device_count=4` (this module, run as a script, is
that child): it trains each case and writes parameters and histories to an `.npz`, which
the tests below compare. One child for every case keeps JAX's start-up and compilation to
one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.specs import mlp

# One xdist worker runs the module: its child process (all runs at once) is computed once.
pytestmark = pytest.mark.xdist_group("data-parallel")

FORCED_DEVICES = 4
RTOL = 1e-5
DEVICE_COUNTS = (1, 2, 4)


def iris_net(devices: int | str, **training: Any) -> dict[str, Any]:
    """Iris through batch norm and dropout (batch statistics and the PRNG both matter)
    with a validation split; 120 training examples in batches of 16."""
    spec = mlp(
        "builtin:iris",
        [16, 3],
        metrics=["accuracy"],
        validation={"split": 0.2},
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": 6, "batch_size": 16, "seed": 3, **training},
        resources={"devices": devices},
    )
    spec["model"]["layers"][1:1] = [{"type": "batch_norm"}, {"type": "dropout", "rate": 0.2}]
    return spec


def digits_cnn(devices: int | str) -> dict[str, Any]:
    """A small CNN on the 8×8 digits: conv, pool, batch norm, dropout, dense."""
    return {
        "dataset": "builtin:digits",
        "validation": {"split": 0.1},
        "model": {
            "layers": [
                {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
                {"type": "max_pool2d", "pool_size": 2},
                {"type": "batch_norm"},
                {"type": "flatten"},
                {"type": "dropout", "rate": 0.1},
                {"type": "dense", "units": 10},
            ]
        },
        "loss": "cross_entropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "training": {"epochs": 2, "batch_size": 64, "seed": 1},
        "resources": {"devices": devices},
    }


# -- in this process (one device) -----------------------------------------------------


def test_resources_default_to_one_device_and_are_checked_with_their_loc() -> None:
    from core.errors import SpecError
    from core.spec import parse_spec

    assert parse_spec(mlp("builtin:iris", [3])).resources.devices == 1
    assert parse_spec(iris_net("all")).resources.fixed_devices is None
    assert parse_spec(iris_net(64)).resources.fixed_devices == 64
    for bad in (0, 65, 2.0, True, "two", None):
        with pytest.raises(SpecError) as caught:
            parse_spec(iris_net(bad))  # type: ignore[arg-type]
        [error] = caught.value.errors
        assert error.loc == ("resources", "devices")
        assert 'a whole number from 1 to 64, or "all"' in error.msg


def test_one_device_and_all_on_one_device_need_no_mesh() -> None:
    import jax

    from core.spec import parse_spec
    from core.train.parallel import Placement

    if len(jax.local_devices()) != 1:
        pytest.skip("this process sees more than one device")
    for devices in (1, "all"):
        placement = Placement.for_spec(parse_spec(iris_net(devices)), 16)
        assert placement.mesh is None and placement.devices == 1
        assert placement.batch_sharding is None


# -- the child process ----------------------------------------------------------------


def _child(out: Path) -> None:  # pragma: no cover - runs in the subprocess
    import jax

    from core.data import load_builtin
    from core.errors import SpecError
    from core.spec import parse_spec
    from core.train import Callbacks, Progress, latest_checkpoint, train
    from core.train.parallel import Placement
    from core.train.step import Batching, TrainState, make_chunk_fn

    assert len(jax.local_devices()) == FORCED_DEVICES, jax.local_devices()
    arrays: dict[str, np.ndarray] = {}
    facts: dict[str, Any] = {}

    def record(name: str, data: dict[str, Any], **kwargs: Any) -> Any:
        spec = parse_spec(data)
        result = train(spec, load_builtin(spec.dataset.removeprefix("builtin:")), **kwargs)
        leaves = jax.tree.leaves((result.params, result.model_state))
        for index, leaf in enumerate(leaves):
            arrays[f"{name}/{index}"] = np.asarray(leaf)
        arrays[f"{name}/loss"] = np.asarray([row["loss"] for row in result.history])
        arrays[f"{name}/val_loss"] = np.asarray([row["val_loss"] for row in result.history])
        facts[name] = {
            "devices": result.devices,
            "leaves": len(leaves),
            "steps": result.steps_completed,
            "history": [
                {k: v for k, v in row.items() if k not in ("samples_per_second", "epoch_seconds")}
                for row in result.history
            ],
            "sharding": str(leaves[0].sharding),
        }
        return result

    for n in DEVICE_COUNTS:
        record(f"mlp-{n}", iris_net(n))  # whole epochs per dispatch
        record(f"mlp-steps-{n}", iris_net(n), chunk_steps=3)  # an epoch in chunks of steps
        record(f"cnn-{n}", digits_cnn(n))
    record("mlp-all", iris_net("all"))
    record("mlp-all-batch-18", iris_net("all", batch_size=18))  # 4 does not split 18: 3 does

    class StopAfter(Callbacks):
        def __init__(self, chunks: int):
            self.chunks, self.seen = chunks, 0

        def on_progress(self, progress: Progress) -> None:
            self.seen += 1

        def should_stop(self) -> bool:
            return self.seen >= self.chunks

    for n in (2, 1):  # resumes from the 2-device checkpoint, on 2 devices and on one
        directory = out.parent / f"ckpt-{n}"
        every = {"checkpoint_every_epochs": 1}
        record(f"first-{n}", iris_net(2, **every), chunk_steps=3)
        stopped = record(  # 8 steps an epoch in 3 chunks: stops inside epoch 1
            f"stopped-{n}",
            iris_net(2, **every),
            chunk_steps=3,
            checkpoint_dir=directory,
            callbacks=StopAfter(5),
        )
        facts[f"stopped-{n}"]["reason"] = str(stopped.stop_reason)
        record(
            f"resumed-{n}",
            iris_net(n, **every),
            chunk_steps=3,
            checkpoint_dir=directory,
            resume_from=latest_checkpoint(directory),
        )

    errors = {}
    for name, data in {
        "too_many": iris_net(8),
        "uneven": iris_net(4, batch_size=18),
    }.items():
        try:
            record(name, data)
        except SpecError as exc:
            errors[name] = [[list(e.loc), e.msg] for e in exc.errors]
    facts["errors"] = errors

    # The compiled chunk over 4 devices reduces the gradient across them.
    spec = parse_spec(iris_net(4))
    placement = Placement.for_spec(spec, 16)
    batching = Batching(120, 16, placement.batch_sharding)
    from core.losses import loss_fn
    from core.model import Model
    from core.optimizers import build_optimizer

    model, tx = Model(spec.model), build_optimizer(spec.optimizer, 100)
    params, model_state = jax.jit(model.init, static_argnums=1)(jax.random.PRNGKey(0), (4,))
    state = placement.put(TrainState(params, model_state, tx.init(params)))
    x, y = placement.put((np.zeros((120, 4), np.float32), np.zeros((120,), np.int32)))
    chunk: Any = make_chunk_fn(model, loss_fn(spec.loss), {}, tx, batching, 2, 1, placement.jit)
    key = jax.random.PRNGKey(0)
    text = chunk.lower(state, x, y, key, np.arange(120), np.int32(0)).compile().as_text()
    facts["all_reduce"] = "all-reduce" in text

    np.savez(out, allow_pickle=False, **arrays)
    out.with_suffix(".json").write_text(json.dumps(facts))


# -- the tests ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, np.ndarray], Any]:
    out = tmp_path_factory.mktemp("data_parallel") / "runs.npz"
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={FORCED_DEVICES}",
        "JAX_PLATFORMS": "cpu",
    }
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "tests.core.test_data_parallel", str(out)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as data:
        arrays = dict(data)
    return arrays, json.loads(out.with_suffix(".json").read_text())


def _leaves(arrays: dict[str, np.ndarray], facts: Any, name: str) -> list[np.ndarray]:
    return [arrays[f"{name}/{i}"] for i in range(facts[name]["leaves"])]


def assert_close(arrays: dict[str, np.ndarray], facts: Any, a: str, b: str) -> None:
    np.testing.assert_allclose(arrays[f"{b}/loss"], arrays[f"{a}/loss"], rtol=RTOL)
    np.testing.assert_allclose(arrays[f"{b}/val_loss"], arrays[f"{a}/val_loss"], rtol=RTOL)
    for x, y in zip(_leaves(arrays, facts, a), _leaves(arrays, facts, b), strict=True):
        np.testing.assert_allclose(y, x, rtol=RTOL, atol=RTOL * float(np.abs(x).max()))


@pytest.mark.parametrize("model", ["mlp", "mlp-steps", "cnn"])
@pytest.mark.parametrize("devices", [2, 4])
def test_n_devices_equal_one_device(runs: Any, model: str, devices: int) -> None:
    arrays, facts = runs
    assert facts[f"{model}-{devices}"]["devices"] == devices
    assert f"'data': {devices}" in facts[f"{model}-{devices}"]["sharding"]  # replicated
    assert_close(arrays, facts, f"{model}-1", f"{model}-{devices}")


def test_one_device_takes_the_single_device_path(runs: Any) -> None:
    _, facts = runs
    assert facts["mlp-1"]["devices"] == 1
    assert facts["mlp-1"]["sharding"].startswith("SingleDeviceSharding")


def test_the_gradient_is_reduced_across_devices(runs: Any) -> None:
    assert runs[1]["all_reduce"]


def test_all_takes_the_most_devices_that_split_the_batch(runs: Any) -> None:
    arrays, facts = runs
    assert facts["mlp-all"]["devices"] == 4
    assert facts["mlp-all-batch-18"]["devices"] == 3
    assert_close(arrays, facts, "mlp-4", "mlp-all")


def test_resume_under_two_devices_equals_uninterrupted(runs: Any) -> None:
    arrays, facts = runs
    assert facts["stopped-2"]["reason"] == "cancelled"
    assert facts["stopped-2"]["steps"] < facts["first-2"]["steps"]
    assert facts["resumed-2"]["history"] == facts["first-2"]["history"]
    for x, y in zip(
        _leaves(arrays, facts, "first-2"), _leaves(arrays, facts, "resumed-2"), strict=True
    ):
        np.testing.assert_array_equal(y, x)


def test_a_two_device_checkpoint_resumes_on_one_device(runs: Any) -> None:
    arrays, facts = runs
    assert facts["resumed-1"]["devices"] == 1
    assert_close(arrays, facts, "first-1", "resumed-1")


def test_more_devices_than_the_worker_has_is_a_clear_error(runs: Any) -> None:
    [[loc, msg]] = runs[1]["errors"]["too_many"]
    assert loc == ["resources", "devices"]
    assert "asks for 8 devices" in msg and f"has {FORCED_DEVICES} cpu devices" in msg


def test_a_batch_the_devices_do_not_split_is_a_clear_error(runs: Any) -> None:
    [[loc, msg]] = runs[1]["errors"]["uneven"]
    assert loc == ["training", "batch_size"]
    assert "18" in msg and "4 devices" in msg and "16 or 20" in msg


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
