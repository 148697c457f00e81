"""Predictions from trained models: `POST /v1/jobs/{id}/predict`."""

from app.services.predict.service import ModelRef, PredictionService, model_ref, read_body

__all__ = ["ModelRef", "PredictionService", "model_ref", "read_body"]
