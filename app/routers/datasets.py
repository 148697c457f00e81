"""Datasets: upload, list, get, delete, built-ins."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
