"""Bounded retries with exponential backoff and full jitter.

See :mod:`otel.dlq` for the manual.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: wait n is uniform in [0, min(maximum, initial*2^(n-1))].

    Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads the retries
    of many consumers that failed together, instead of having them retry in lockstep.
    """

    initial: float = 0.2
    """Upper bound of the first wait, in seconds."""
    maximum: float = 5.0
    """Cap of every wait's upper bound, in seconds."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("Backoff needs 0 < initial <= maximum")

    def ceiling(self, failures: int) -> float:
        """Return the upper bound of the wait after ``failures`` consecutive failures (>= 1)."""
        return min(self.maximum, self.initial * 2.0 ** min(failures - 1, 64))

    def delay(self, failures: int) -> float:
        """Return a random wait in seconds after ``failures`` consecutive failures (>= 1)."""
        return self.rng.uniform(0.0, self.ceiling(failures))


@dataclass(frozen=True)
class RetryPolicy:
    """How often a handler runs for one record before the record is dead-lettered."""

    max_attempts: int = 5
    """Handler runs per record, the first included; 1 disables retries."""
    backoff: Backoff = field(default_factory=Backoff)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
