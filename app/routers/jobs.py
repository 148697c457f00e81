"""Jobs: submit, list, get, cancel, metrics, model download."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
