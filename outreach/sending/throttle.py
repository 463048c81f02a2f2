"""Rate limits and the per-recipient-domain scheduler, on an injectable clock.

Everything here is plain synchronous logic over a ``now`` value (seconds, monotonic), so the tests drive
it with a fake clock instead of sleeping. The asyncio side (``outreach.sending.run``) asks
``DomainScheduler.take(now)`` for the next job and sleeps for the delay it returns.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Clock = Callable[[], float]

monotonic: Clock = time.monotonic

J = TypeVar("J")


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


@dataclass
class _Domain(Generic[J]):
    limiter: RateLimiter
    jobs: deque[J] = field(default_factory=deque)
    in_flight: int = 0


class DomainScheduler(Generic[J]):
    """Hands out jobs fairly across recipient domains within a global rate, a per-domain rate and a
    per-domain cap on messages in flight.

    Jobs wait in one queue per domain; ``take`` walks the domains round-robin and returns the first job
    whose domain is under its cap and its rate, if the global rate allows one now. A slow or throttled
    domain (one gemeente's mail server) therefore never holds up letters to the other 341.
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        domain_rate: float | None = None,
        domain_connections: int | None = None,
        burst: int = 1,
    ) -> None:
        if domain_connections is not None and domain_connections < 1:
            raise ValueError(f"domain_connections must be at least 1, not {domain_connections}")
        self._global = RateLimiter(rate, burst=burst)
        self._domain_rate = domain_rate
        self._domain_cap = domain_connections
        self._domains: dict[Hashable, _Domain[J]] = {}
        self._ring: deque[Hashable] = deque()  # domains that have waiting jobs, in round-robin order
        self._waiting = 0

    def __len__(self) -> int:
        """Jobs waiting (not yet taken)."""
        return self._waiting

    def add(self, domain: Hashable, job: J) -> None:
        entry = self._domains.get(domain)
        if entry is None:
            entry = self._domains[domain] = _Domain(RateLimiter(self._domain_rate))
        if not entry.jobs:
            self._ring.append(domain)
        entry.jobs.append(job)
        self._waiting += 1

    def take(self, now: float) -> tuple[J | None, float]:
        """``(job, 0.0)`` when a job may go now; ``(None, seconds)`` to wait; ``(None, inf)`` when no job
        can go until one in flight is done (or nothing is waiting)."""
        if not self._ring:
            return None, float("inf")
        global_delay = self._global.delay(now)
        if global_delay > 0:
            return None, global_delay
        wait = float("inf")
        for _ in range(len(self._ring)):
            domain = self._ring[0]
            entry = self._domains[domain]
            self._ring.rotate(-1)
            if self._domain_cap is not None and entry.in_flight >= self._domain_cap:
                continue
            domain_delay = entry.limiter.delay(now)
            if domain_delay > 0:
                wait = min(wait, domain_delay)
                continue
            job = entry.jobs.popleft()
            if not entry.jobs:
                self._ring.pop()  # the rotation made it the last (``remove`` walked the whole ring)
            entry.in_flight += 1
            entry.limiter.consume(now)
            self._global.consume(now)
            self._waiting -= 1
            return job, 0.0
        return None, wait

    def done(self, domain: Hashable, now: float) -> None:
        """A job of ``domain`` taken earlier is finished at ``now``: frees its in-flight slot."""
        entry = self._domains[domain]
        entry.in_flight -= 1
        # Forget idle domains so a campaign to 100,000 private addresses keeps no state per domain.
        if not entry.in_flight and not entry.jobs and entry.limiter.delay(now) == 0:
            del self._domains[domain]

    def drain(self) -> list[J]:
        """Remove and return every waiting job (on stop: they go back to the pool)."""
        jobs: list[J] = []
        for domain in list(self._ring):
            jobs.extend(self._domains[domain].jobs)
            self._domains[domain].jobs.clear()
        self._ring.clear()
        self._waiting = 0
        return jobs
