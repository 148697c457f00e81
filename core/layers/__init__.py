"""Layer implementations; importing this package fills the `LAYERS` registry."""

from core.layers import (  # noqa: F401  (registration)
    attention,
    conv,
    dense,
    normalization,
    reshape,
    sequence,
)
from core.layers.base import LAYERS, Layer, ShapeMismatch, build_layer

__all__ = ["LAYERS", "Layer", "ShapeMismatch", "build_layer"]
