"""The JobSpec (API.md) as pydantic models, and its dataset-free validation."""

from core.spec.job import JobSpec, ModelSpec, Training
from core.spec.layers import LayerSpec
from core.spec.validate import GRAPH_INPUT, monitorable_metrics, parse_spec

__all__ = [
    "GRAPH_INPUT",
    "JobSpec",
    "LayerSpec",
    "ModelSpec",
    "Training",
    "monitorable_metrics",
    "parse_spec",
]
