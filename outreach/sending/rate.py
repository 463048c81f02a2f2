"""A rate limit exact at thousands of events per second, without timers."""

from __future__ import annotations


class RateLimiter:
    """A generic cell rate algorithm (GCRA) limiter: ``rate`` events per second, bursts up to ``burst``.

    GCRA keeps one number (the theoretical arrival time) instead of a token count, so it is exact at
    thousands of events per second without a timer, and ``delay(now)`` says precisely how long to wait.
    A ``rate`` of None means unlimited.
    """

    __slots__ = ("_emission", "_tat", "_tolerance", "rate")

    def __init__(self, rate: float | None, burst: int = 1) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate = rate
        self._emission = 0.0 if rate is None else 1.0 / rate
        self._tolerance = self._emission * (burst - 1)
        self._tat = float("-inf")

    def delay(self, now: float) -> float:
        """Seconds until one event may happen (0.0: now). Does not consume."""
        if self.rate is None:
            return 0.0
        return max(0.0, self._tat - self._tolerance - now)

    def consume(self, now: float) -> None:
        """Record one event at ``now`` (call only when ``delay(now)`` is 0)."""
        if self.rate is not None:
            self._tat = max(self._tat, now) + self._emission
