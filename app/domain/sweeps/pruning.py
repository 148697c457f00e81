"""Early termination: whether a trial goes on after an epoch, given its peers' values.

Pure rules over numbers; `app.domain.sweeps.judge` feeds them from the metrics table.
Epochs here are counts (a trial that has finished 3 epochs has reached epoch 3), which is
how API.md states rungs (min_epochs·rfᵏ).

- ASHA (Li et al. 2020, asynchronous successive halving): at a rung, a trial continues
  when fewer than ceil(n / rf) of the n trials that reached the rung so far (itself
  included) are strictly better. The first trial at a rung always continues, and ties
  continue, so nothing is stopped for lack of company; as in Ray Tune's ASHAScheduler
  the decision is never revisited when later trials arrive.
- Median (Golovin et al. 2017, Vizier's median stopping rule, as in Optuna's
  MedianPruner): from `min_epochs` on, a trial strictly worse than the median of the
  earlier trials' values at the same epoch stops; with no earlier trial there it goes on.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from app.domain.sweeps.definition import Asha, EarlyTermination, MedianStop, Metric


def decision_epochs(rule: EarlyTermination, epochs: int) -> list[int]:
    """The epoch counts at which `rule` judges a trial of `epochs` epochs (never the last:
    a trial that has trained them all is done anyway)."""
    if isinstance(rule, MedianStop):
        return list(range(rule.min_epochs, epochs))
    rungs = []
    rung = rule.min_epochs
    while rung < epochs:
        rungs.append(rung)
        rung *= rule.reduction_factor
    return rungs


def asha_continues(rule: Asha, metric: Metric, value: float, at_rung: Sequence[float]) -> bool:
    """`at_rung`: the values of every trial that reached this rung so far, this one included."""
    if not math.isfinite(value):
        return False
    better = sum(1 for other in at_rung if math.isfinite(other) and metric.better(other, value))
    keep = math.ceil(len(at_rung) / rule.reduction_factor)
    return better < keep


def median_continues(metric: Metric, value: float, earlier: Sequence[float]) -> bool:
    """`earlier`: the values at this epoch of the trials numbered before this one."""
    if not math.isfinite(value):
        return False
    finite = [other for other in earlier if math.isfinite(other)]
    if not finite:
        return True
    return not metric.better(statistics.median(finite), value)


def continues(rule: EarlyTermination, metric: Metric, value: float, peers: Sequence[float]) -> bool:
    """Whether a trial with `value` at a decision epoch goes on; `peers` as each rule wants
    them (ASHA: all trials at the rung including this one; median: the earlier trials)."""
    if isinstance(rule, Asha):
        return asha_continues(rule, metric, value, peers)
    return median_continues(metric, value, peers)
