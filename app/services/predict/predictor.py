"""A trained model ready to answer predictions: loaded once, applied by jitted programs.

Batches are padded to a few bucket sizes (powers of two up to `MAX_CHUNK`; larger requests
run in chunks of `MAX_CHUNK`), so requests of any size reuse a handful of compiled
programs instead of compiling one per batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from core.export import import_model, model_input_shape
from core.model import Model

Shape = tuple[int, ...]
MAX_CHUNK = 1024  # examples per dispatch: bounds the padding waste and the memory per call
MIN_BUCKET = 8


def bucket_size(num_examples: int) -> int:
    """The padded batch size for a chunk: the next power of two in [MIN_BUCKET, MAX_CHUNK]."""
    return min(MAX_CHUNK, max(MIN_BUCKET, 1 << (num_examples - 1).bit_length()))


def predicted_classes(outputs: np.ndarray, loss_type: str) -> np.ndarray:
    """Class indices from outputs `[B, ..., units]`, by the rule of the accuracy metric.

    A single output unit (or any `binary_cross_entropy` model) is a binary classifier:
    logits are thresholded at 0, a sigmoid trained with mse/sse at 0.5, giving `[B, ...]`
    (the unit axis dropped when it has size 1). Otherwise the class is the argmax over the
    last axis (logits or probabilities alike).
    """
    binary = loss_type == "binary_cross_entropy"
    if binary or outputs.ndim < 2 or outputs.shape[-1] == 1:
        hits = (outputs > (0.0 if binary else 0.5)).astype(np.int64)
        return hits[..., 0] if hits.ndim >= 2 and hits.shape[-1] == 1 else hits
    return np.argmax(outputs, axis=-1)


@dataclass(frozen=True)
class Prediction:
    outputs: np.ndarray  # float32 [B, *output_shape]
    classes: np.ndarray | None  # int [B, ...] for classifiers


class Predictor:
    """One trained model: its parameters on the device and its jitted forward pass."""

    def __init__(
        self,
        model: Model,
        params: Any,
        state: Any,
        input_shape: Shape,
        *,
        loss_type: str,
        classifier: bool,
    ):
        self.input_shape = input_shape
        self.loss_type = loss_type
        self.classifier = classifier
        self._params = jax.device_put(params)
        self._state = jax.device_put(state)

        def forward(params: Any, state: Any, x: jax.Array) -> jax.Array:
            outputs, _ = model.apply(params, state, x, train=False)
            return outputs

        self._forward = jax.jit(forward)

    @classmethod
    def from_file(
        cls, path: Path, *, classifier: bool, fallback_input_shape: Shape | None
    ) -> Predictor:
        """Load a `.safetensors` model written by the worker.

        Args:
          path: the model file.
          classifier: whether outputs come with `classes`.
          fallback_input_shape: the dataset's input shape, for a file that lacks one.

        Raises:
          ValueError: an unreadable model file, or no input shape from either source.
        """
        data = path.read_bytes()
        params, state, spec = import_model(data)
        input_shape = model_input_shape(data) or fallback_input_shape
        if input_shape is None:
            raise ValueError("the model file does not record its input shape")
        return cls(
            Model(spec.model),
            params,
            state,
            tuple(input_shape),
            loss_type=spec.loss.type,
            classifier=classifier,
        )

    def predict(self, x: np.ndarray) -> Prediction:
        """Outputs (and classes) for float32 inputs `[B, *input_shape]`, B ≥ 1."""
        chunks = [self._run_chunk(x[i : i + MAX_CHUNK]) for i in range(0, len(x), MAX_CHUNK)]
        outputs = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        classes = predicted_classes(outputs, self.loss_type) if self.classifier else None
        return Prediction(outputs, classes)

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        # Padding and slicing happen in numpy: a jax op here would compile per size too.
        padded = np.zeros((bucket_size(len(chunk)), *self.input_shape), np.float32)
        padded[: len(chunk)] = chunk
        outputs = np.asarray(self._forward(self._params, self._state, padded))
        return outputs[: len(chunk)]
