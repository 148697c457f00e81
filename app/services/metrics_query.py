"""A job's metric series as API.md shows them, downsampled on the server when asked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.db.engine import reading
from app.domain.db.models import Metric
from app.schemas.jobs import JobMetricsPublic, MetricSeriesPublic

MIN_POINTS = 4  # downsampling always keeps the first, last, min and max points


def job_metrics(
    session: Session,
    job_id: str,
    *,
    names: Sequence[str] = (),
    since_step: int | None = None,
    max_points: int | None = None,
) -> JobMetricsPublic:
    """Series sorted by name, points by step.

    Args:
      names: only these series (all when empty).
      since_step: only points whose step is at least this.
      max_points: at most this many points per series (≥ `MIN_POINTS`); see `downsample`.
    """
    query = select(Metric).where(Metric.job_id == job_id)
    if names:
        query = query.where(Metric.name.in_(names))
    if since_step is not None:
        query = query.where(Metric.step >= since_step)
    with reading(session):
        rows = list(session.scalars(query.order_by(Metric.name, Metric.step)))
    series = []
    for name, group in groupby(rows, key=lambda row: row.name):
        points = list(group)
        if max_points is not None:
            points = [points[i] for i in downsample([p.value for p in points], max_points)]
        series.append(series_public(name, points))
    return JobMetricsPublic(job_id=job_id, series=series)


def downsample(values: Sequence[float], max_points: int) -> list[int]:
    """Indices (ascending) of at most `max_points` (≥ `MIN_POINTS`) of `values`.

    Always the first and last points and those of the minimum and the maximum (non-finite
    values are never taken as extremes); the rest of the budget goes to points evenly
    spaced over the series (the nearest unused one where a spot is already taken).
    """
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be at least {MIN_POINTS}, got {max_points}")
    n = len(values)
    if n <= max_points:
        return list(range(n))
    kept = {0, n - 1}
    finite = [i for i, value in enumerate(values) if math.isfinite(value)]
    if finite:
        kept |= {min(finite, key=values.__getitem__), max(finite, key=values.__getitem__)}
    budget = max_points - len(kept)
    for j in range(1, budget + 1):
        kept.add(_nearest_unused(math.floor(j * (n - 1) / (budget + 1) + 0.5), kept, n))
    return sorted(kept)


def _nearest_unused(target: int, used: set[int], n: int) -> int:
    for distance in range(n):
        for candidate in (target - distance, target + distance):
            if 0 <= candidate < n and candidate not in used:
                return candidate
    raise ValueError("every index is used")  # unreachable: callers keep fewer than n


class MetricPoint(Protocol):
    """A metric row, or the events poller's copy of one."""

    @property
    def step(self) -> int: ...
    @property
    def epoch(self) -> int: ...
    @property
    def value(self) -> float: ...
    @property
    def time(self) -> datetime: ...


def series_public(name: str, points: Sequence[MetricPoint]) -> MetricSeriesPublic:
    """One series as the API shows it: columns, with null for a value that is not finite."""
    return MetricSeriesPublic(
        name=name,
        step=[p.step for p in points],
        epoch=[p.epoch for p in points],
        value=[p.value if math.isfinite(p.value) else None for p in points],
        time=[p.time for p in points],
    )
