"""Rate limits and the per-recipient-domain scheduler, on an injectable clock.

Everything here is plain synchronous logic over a ``now`` value (seconds, monotonic), so the tests drive
it with a fake clock instead of sleeping. The asyncio side (``outreach.sending.run``) asks
``DomainScheduler.take(now)`` for the next job and sleeps for the delay it returns.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from outreach.sending.destination import Destination, DestinationLimits, Signal
from outreach.sending.rate import RateLimiter

__all__ = ["Clock", "DomainScheduler", "RateLimiter", "monotonic"]

Clock = Callable[[], float]

monotonic: Clock = time.monotonic

J = TypeVar("J")


@dataclass
class _Domain(Generic[J]):
    destination: Destination  # the recipient domain
    group: Destination | None  # the MX provider group it belongs to
    jobs: deque[J] = field(default_factory=deque)


class DomainScheduler(Generic[J]):
    """Hands out jobs fairly across recipient domains within a global rate and each destination's limits.

    Jobs wait in one queue per domain; ``take`` walks the domains round-robin and returns the first job
    that its domain and its MX group (``outreach.sending.destination``: cap, rate, feedback window,
    pause) take now, if the global rate allows one. A slow or throttled domain (one gemeente's mail
    server) or group (Exchange Online) therefore never holds up letters to the others. A job added
    with ``not_before`` (a retry after a backoff, letters of a paused destination) waits in a heap until
    then, off the queues.
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        domain_rate: float | None = None,
        domain_connections: int | None = None,
        burst: int = 1,
        group_rate: float | None = None,
        group_connections: int | None = None,
        pause_initial: float = 1.0,
        pause_max: float = 60.0,
    ) -> None:
        if domain_connections is not None and domain_connections < 1:
            raise ValueError(f"domain_connections must be at least 1, not {domain_connections}")
        self._global = RateLimiter(rate, burst=burst)
        self._domain_limits = DestinationLimits(domain_connections, domain_rate, pause_initial, pause_max)
        self._group_limits = DestinationLimits(group_connections, group_rate, pause_initial, pause_max)
        self._domains: dict[Hashable, _Domain[J]] = {}
        self._groups: dict[str, Destination] = {}
        self._group_domains: dict[str, set[Hashable]] = {}
        self._ring: deque[Hashable] = deque()  # domains that have waiting jobs, in round-robin order
        self._waiting = 0  # jobs on the domain queues
        self._delayed: list[tuple[float, int, Hashable, str | None, J]] = []  # heap by not-before
        self._sequence = 0
        self._given_up: list[J] = []  # jobs of destinations that gave up for this run
        self._now = 0.0  # the latest ``now`` seen: what "paused" and "not before" compare with

    def __len__(self) -> int:
        """Jobs waiting (not yet taken), those waiting for a not-before time included."""
        return self._waiting + len(self._delayed) + len(self._given_up)

    @property
    def ready(self) -> int:
        """Jobs on the queues, not held back by a not-before time."""
        return self._waiting

    def _entry(self, domain: Hashable, group: str | None) -> _Domain[J]:
        entry = self._domains.get(domain)
        if entry is None:
            group_destination = None
            if group is not None:
                group_destination = self._groups.get(group)
                if group_destination is None:
                    group_destination = self._groups[group] = Destination(group, self._group_limits)
                self._group_domains.setdefault(group, set()).add(domain)
            destination = Destination(str(domain), self._domain_limits)
            entry = self._domains[domain] = _Domain(destination, group_destination)
        return entry

    def add(self, domain: Hashable, job: J, *, group: str | None = None, not_before: float = 0.0) -> None:
        entry = self._entry(domain, group)
        destination, group_destination = entry.destination, entry.group
        if destination.gave_up or (group_destination is not None and group_destination.gave_up):
            self._given_up.append(job)
            return
        paused_until = destination.paused_until
        if group_destination is not None:
            paused_until = max(paused_until, group_destination.paused_until)
        if paused_until > self._now:
            not_before = max(not_before, paused_until)
        if not_before > self._now:
            self._sequence += 1
            heapq.heappush(self._delayed, (not_before, self._sequence, domain, group, job))
            return
        if not entry.jobs:
            self._ring.append(domain)
        entry.jobs.append(job)
        self._waiting += 1

    def _release(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, domain, group, job = heapq.heappop(delayed)
            self.add(domain, job, group=group)

    def take(self, now: float) -> tuple[J | None, float]:
        """``(job, 0.0)`` when a job may go now; ``(None, seconds)`` to wait; ``(None, inf)`` when no job
        can go until one in flight is done (or nothing is waiting)."""
        self._now = now
        if self._delayed:
            self._release(now)
        wait = self._delayed[0][0] - now if self._delayed else float("inf")
        if not self._ring:
            return None, wait
        global_delay = self._global.delay(now)
        if global_delay > 0:
            return None, global_delay
        for _ in range(len(self._ring)):
            domain = self._ring[0]
            entry = self._domains[domain]
            self._ring.rotate(-1)
            destination, group = entry.destination, entry.group
            delay = destination.delay(now)
            if group is not None and delay == 0.0:
                delay = group.delay(now)
            if delay > 0:
                wait = min(wait, delay)
                continue
            job = entry.jobs.popleft()
            if not entry.jobs:
                self._ring.pop()  # the rotation made it the last (``remove`` walked the whole ring)
            destination.take(now)
            if group is not None:
                group.take(now)
            self._global.consume(now)
            self._waiting -= 1
            return job, 0.0
        return None, wait

    def done(self, domain: Hashable, now: float) -> None:
        """A job of ``domain`` taken earlier is finished at ``now``: frees its in-flight slot."""
        entry = self._domains[domain]
        entry.destination.done()
        if entry.group is not None:
            entry.group.done()
        # Forget idle domains so a campaign to 100,000 private addresses keeps no state per domain.
        if not entry.jobs and entry.destination.idle(now) and (entry.group is None or entry.group.idle(now)):
            del self._domains[domain]
            if entry.group is not None:
                members = self._group_domains.get(entry.group.key)
                if members is not None:
                    members.discard(domain)
                    if not members:
                        del self._group_domains[entry.group.key]
                        del self._groups[entry.group.key]

    def destinations(self, domain: Hashable) -> tuple[Destination, Destination | None]:
        """``(domain destination, group destination or None)`` of a domain that has jobs or state."""
        entry = self._domains[domain]
        return entry.destination, entry.group

    def feedback(self, domain: Hashable, now: float, signal: Signal | None = None, error: str = "") -> float:
        """How a letter to ``domain`` went: ``signal`` None for a success, else a ``Signal`` for the
        domain and its group. Returns the pause that started (0.0: none). The waiting letters of a
        destination that paused step off the queues until the pause ends; those of a destination whose
        pause reached its maximum are handed back for this run (``given_up``)."""
        self._now = max(self._now, now)
        entry = self._domains.get(domain)
        if entry is None:
            return 0.0
        targets = [entry.destination] if entry.group is None else [entry.destination, entry.group]
        if signal is None:
            for destination in targets:
                destination.success(now)
            return 0.0
        longest = 0.0
        for destination in targets:
            pause = destination.signal(signal, now, error)
            if pause > 0.0:
                longest = max(longest, pause)
                members = (
                    [domain]
                    if destination is entry.destination
                    else list(self._group_domains[destination.key])
                )
                self._hold(members, destination)
        return longest

    def _hold(self, domains: list[Hashable], destination: Destination) -> None:
        """Move the queued jobs of ``domains`` off the queues: until the pause ends, or for good in this
        run when the destination gave up."""
        for domain in domains:
            entry = self._domains.get(domain)
            if entry is None or not entry.jobs:
                continue
            jobs = list(entry.jobs)
            entry.jobs.clear()
            self._ring.remove(domain)
            self._waiting -= len(jobs)
            if destination.gave_up:
                self._given_up.extend(jobs)
            else:
                for job in jobs:
                    self.add(domain, job, group=entry.group.key if entry.group else None,
                             not_before=destination.paused_until)  # fmt: skip

    def given_up(self) -> list[J]:
        """Remove and return the jobs of destinations that gave up for this run (they wait for a later
        run), including those that arrive for them later."""
        jobs, self._given_up = self._given_up, []
        return jobs

    def drain(self) -> list[J]:
        """Remove and return every waiting job (on stop: they go back to the pool)."""
        jobs: list[J] = []
        for domain in list(self._ring):
            jobs.extend(self._domains[domain].jobs)
            self._domains[domain].jobs.clear()
        jobs.extend(job for *_, job in self._delayed)
        jobs.extend(self._given_up)
        self._ring.clear()
        self._delayed.clear()
        self._given_up.clear()
        self._waiting = 0
        return jobs
