"""Rate limits and the per-domain scheduler on a fake clock: no sleeping, no wall-clock asserts."""

from __future__ import annotations

import itertools

import pytest

from outreach.sending.throttle import DomainScheduler, RateLimiter


def drain(scheduler: DomainScheduler[str], until: float, step: float = 0.001) -> list[tuple[float, str]]:
    """Run the scheduler on a fake clock; every job finishes at once. Returns (time, job) taken."""
    now, taken = 0.0, []
    while now <= until and len(scheduler):
        job, wait = scheduler.take(now)
        if job is not None:
            taken.append((round(now, 6), job))
            scheduler.done(job.split(":")[0], now)
            continue
        now += wait if wait != float("inf") else step
    return taken


def test_rate_limiter_spaces_events_evenly() -> None:
    limiter = RateLimiter(4.0)  # one event every 0.25 s
    assert limiter.delay(10.0) == 0.0
    limiter.consume(10.0)
    assert limiter.delay(10.0) == pytest.approx(0.25)
    assert limiter.delay(10.1) == pytest.approx(0.15)
    assert limiter.delay(10.25) == 0.0


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(10.0, burst=3)
    for _ in range(3):
        assert limiter.delay(0.0) == 0.0
        limiter.consume(0.0)
    assert limiter.delay(0.0) == pytest.approx(0.1)


def test_unlimited_never_waits() -> None:
    limiter = RateLimiter(None)
    for _ in range(1000):
        limiter.consume(0.0)
    assert limiter.delay(0.0) == 0.0


def test_global_rate_over_many_domains() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(rate=10.0)
    for n in range(30):
        scheduler.add(f"d{n % 5}", f"d{n % 5}:{n}")
    taken = drain(scheduler, until=100)
    times = [t for t, _ in taken]
    assert len(taken) == 30
    assert times[-1] == pytest.approx(2.9)  # 30 letters at 10/s: the last one at 2.9 s
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(times))


def test_per_domain_rate_does_not_hold_up_other_domains() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(domain_rate=1.0)
    for n in range(5):
        scheduler.add("slow", f"slow:{n}")
    for n in range(5):
        scheduler.add("other", f"other:{n}")
    taken = drain(scheduler, until=100)
    slow = [t for t, job in taken if job.startswith("slow")]
    other = [t for t, job in taken if job.startswith("other")]
    assert slow == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert other == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])  # each domain at its own 1/s, side by side


def test_round_robin_interleaves_domains() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler()
    for n in range(3):
        scheduler.add("a", f"a:{n}")
        scheduler.add("b", f"b:{n}")
    order = [job for _, job in drain(scheduler, until=1)]
    assert [job[0] for job in order] == ["a", "b", "a", "b", "a", "b"]


def test_domain_cap_limits_letters_in_flight() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(domain_connections=2)
    for n in range(4):
        scheduler.add("gemeente.nl", f"gemeente.nl:{n}")
    first, _ = scheduler.take(0.0)
    second, _ = scheduler.take(0.0)
    third, wait = scheduler.take(0.0)
    assert first and second and third is None
    assert wait == float("inf")  # nothing to wait for but a letter in flight to finish
    scheduler.done("gemeente.nl", 0.5)
    again, _ = scheduler.take(0.5)
    assert again == "gemeente.nl:2"


def test_drain_returns_waiting_jobs() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler()
    scheduler.add("a", "a:0")
    scheduler.add("b", "b:0")
    assert sorted(scheduler.drain()) == ["a:0", "b:0"]
    assert len(scheduler) == 0
    assert scheduler.take(0.0) == (None, float("inf"))
