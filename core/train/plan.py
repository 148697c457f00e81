"""How much work each dispatch does: a chunk of steps of a long epoch, or many short epochs.

Control comes back to Python about once every TARGET_CHUNK_SECONDS, for progress, metric
writes and cancellation. The first chunks are sized from a guess of a step's time (XLA's
FLOP count, see `loop`) and the first many-epochs chunk runs only a fraction of the
guessed second, since the guess can be far off for small steps; its timing (programs are
compiled before they run, so no timing has compilation in it) then replaces the guess.
Results do not depend on the plan: a step's batch and key depend only on its epoch and
position, and every epoch ends with the same function (`epoch.EpochEnd`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Half a second: a cooperative cancel lands within the supervisor's 1.3 s grace even when a
# busy machine makes a chunk take twice as long as the last one measured.
TARGET_CHUNK_SECONDS = 0.5
# Epoch buffers of the many-epochs program hold [capacity, steps per epoch] values; this
# bounds them (a few MB) for runs of very many tiny epochs.
MAX_BUFFERED_STEPS = 2**20
# The first many-epochs chunk runs 1/FIRST_CHUNK_FRACTION of the epochs the guess allows.
FIRST_CHUNK_FRACTION = 8


@dataclass(frozen=True)
class Steps:
    """Steps [start, start + length) of one epoch."""

    length: int


@dataclass(frozen=True)
class Epochs:
    """`count` whole epochs in one dispatch, from a program with room for `capacity`."""

    count: int
    capacity: int


Chunk = Steps | Epochs


@dataclass
class ChunkPlanner:
    steps_per_epoch: int
    epochs: int  # of the whole run
    seconds_per_step: float  # the guess, then the latest measurement
    fixed_steps: int | None = None  # the caller's chunk_steps: no timing-based sizing
    checkpoint_every_epochs: int | None = None
    # Epoch counts a many-epochs chunk must end at, so the callbacks see the run there
    # (a sweep's early-termination rungs).
    pauses: frozenset[int] = frozenset()
    capacity: int | None = None  # of the many-epochs program, fixed once chosen
    timed: bool = False  # seconds_per_step is a measurement, not the guess

    def __post_init__(self) -> None:
        self.step_chunk = self.fixed_steps or _power_of_two_steps(self.seconds_per_step)

    @property
    def spans_epochs(self) -> bool:
        """Whole epochs fit in a chunk: run many of them per dispatch."""
        return self.step_chunk >= self.steps_per_epoch

    def next(self, epoch: int, position: int) -> Chunk:
        """The chunk that starts at step `position` of `epoch`."""
        per_epoch = self.steps_per_epoch
        if position > 0 or not self.spans_epochs:
            return Steps(min(self.step_chunk, per_epoch - position))
        if self.fixed_steps is not None:
            wanted = self.fixed_steps // per_epoch
        else:
            wanted = int(TARGET_CHUNK_SECONDS / max(per_epoch * self.seconds_per_step, 1e-12))
        if self.capacity is None:
            # Headroom for the first measurement to raise the count without a recompile.
            headroom = 1 if self.fixed_steps is not None else 4
            most = min(self.epochs, max(1, MAX_BUFFERED_STEPS // per_epoch))
            self.capacity = _power_of_two_at_least(min(max(wanted, 1) * headroom, most))
        if not self.timed and self.fixed_steps is None:
            wanted //= FIRST_CHUNK_FRACTION
        count = min(max(wanted, 1), self.capacity, self.epochs - epoch)
        if self.checkpoint_every_epochs:
            count = min(count, self.checkpoint_every_epochs - epoch % self.checkpoint_every_epochs)
        if upcoming := [pause for pause in self.pauses if pause > epoch]:
            count = min(count, min(upcoming) - epoch)
        return Epochs(count, self.capacity)

    def measured(self, chunk: Chunk, seconds: float) -> None:
        """A chunk ran in `seconds`, none of it compiling."""
        if self.fixed_steps is not None:
            return
        steps = chunk.length if isinstance(chunk, Steps) else chunk.count * self.steps_per_epoch
        self.seconds_per_step = seconds / steps
        self.timed = True
        if isinstance(chunk, Steps) and chunk.length != self.step_chunk:
            return  # an epoch's remainder: too short to say much
        better = _power_of_two_steps(self.seconds_per_step)
        # Step chunks are compiled per length: change it only when the guess was far off.
        if not 0.25 <= better / self.step_chunk <= 4:
            self.step_chunk = better


def _power_of_two_steps(seconds_per_step: float) -> int:
    """Steps for about TARGET_CHUNK_SECONDS, rounded down to a power of two (so similar
    jobs share compiled programs)."""
    wanted = max(1, int(TARGET_CHUNK_SECONDS / max(seconds_per_step, 1e-12)))
    return 2 ** int(math.log2(wanted))


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()
