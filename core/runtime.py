"""Process-wide JAX settings the worker applies once, before any training."""

from __future__ import annotations

from pathlib import Path

import jax


def enable_compilation_cache(directory: Path | str) -> None:
    """Keep compiled XLA programs on disk so repeated specs skip compilation.

    The thresholds are lowered from their defaults (1 s, and a minimum entry size) because
    the training programs of small models compile in well under a second each, and a job
    usually compiles several of them.
    """
    Path(directory).mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def device_description() -> str:
    """What this process trains on, as a user would name it: `"cpu"`, `"gpu: NVIDIA H100"`."""
    device = jax.devices()[0]
    if device.platform == "cpu":
        return "cpu"
    return f"{device.platform}: {device.device_kind}"
