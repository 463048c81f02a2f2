"""The destination model on a fake clock: the concurrency window shrinks on throttle signals and grows
back after successes, a pause grows on repeated signals, a destination that keeps failing is down, and
the scheduler holds a paused destination's letters while the others keep their pace."""

from __future__ import annotations

import pytest

from outreach.sending.destination import Destination, DestinationLimits, Signal
from outreach.sending.throttle import DomainScheduler


def test_the_window_shrinks_per_signal_and_grows_back_after_successes() -> None:
    destination = Destination("outlook.com", DestinationLimits(connections=4, pause_initial=1.0))
    assert destination.window == 4
    for expected in (3, 2, 1):
        assert destination.signal(Signal.THROTTLE, 0.0, "451 4.7.650") == 0.0  # no pause yet
        assert destination.window == expected
    assert destination.delay(0.0) == 0.0  # one at a time, at once
    destination.take(0.0)
    assert destination.delay(0.0) == float("inf")  # the window is full
    destination.done()
    # Back up: every `window` successes in a row widen it by one.
    grown = []
    for _ in range(1 + 2 + 3):
        destination.success(1.0)
        grown.append(destination.window)
    assert grown == [2, 2, 3, 3, 3, 4]
    destination.success(1.0)
    assert destination.window == 4  # never past the cap


def test_repeated_signals_at_one_pause_for_longer_and_a_success_ends_it() -> None:
    limits = DestinationLimits(connections=1, pause_initial=1.0, pause_max=8.0)
    destination = Destination("d", limits)
    pauses = [destination.signal(Signal.THROTTLE, 10.0) for _ in range(4)]
    assert pauses == [1.0, 2.0, 4.0, 8.0]
    assert destination.delay(10.0) == pytest.approx(8.0)
    assert destination.gave_up  # the pause reached its maximum
    destination.success(11.0)
    assert destination.delay(11.0) == 0.0 and not destination.paused and not destination.gave_up


def test_failures_as_a_whole_in_a_row_mean_down_and_a_success_resets_them() -> None:
    destination = Destination("relay", DestinationLimits(connections=8, down_after=3, pause_initial=0.5))
    destination.signal(Signal.FAILURE, 0.0)
    destination.signal(Signal.THROTTLE, 0.0)  # a throttle reply is no failure of the whole
    destination.signal(Signal.FAILURE, 0.0)
    assert not destination.down
    destination.success(0.0)
    for _ in range(3):
        destination.signal(Signal.FAILURE, 0.0, "connection refused")
    assert destination.down and destination.last_error == "connection refused"


def test_a_stray_fault_after_enough_successes_costs_no_connection_but_repeated_ones_do() -> None:
    limits = DestinationLimits(connections=4, pause_initial=1.0, stray_after=4)
    relay = Destination("127.0.0.1:25", limits)
    # A fresh destination has not shown yet that it works: its first fault counts.
    assert relay.signal(Signal.FAILURE, 0.0, "connection lost") == 0.0 and relay.window == 3
    for _ in range(4):
        relay.success(1.0)
    assert relay.window == 4
    # Four letters went well since: one dropped connection is a stray fault of a server that works.
    assert relay.signal(Signal.FAILURE, 2.0, "connection lost") == 0.0
    assert relay.window == 4 and relay.failures == 1 and relay.signals == 2
    # A 421 right after it is not: the server is busy, the window shrinks as before.
    relay.signal(Signal.THROTTLE, 2.0, "421 busy")
    assert relay.window == 3
    for _ in range(2):
        relay.success(3.0)
    relay.signal(Signal.THROTTLE, 3.0, "421 busy")  # two successes between: not enough
    assert relay.window == 2


def test_at_one_letter_a_time_only_repeated_faults_pause() -> None:
    relay = Destination("relay", DestinationLimits(connections=1, pause_initial=1.0, stray_after=3))
    assert relay.signal(Signal.THROTTLE, 0.0) == 1.0  # no success yet: it pauses
    assert relay.signal(Signal.THROTTLE, 0.0) == 2.0
    for _ in range(3):
        relay.success(5.0)
    assert relay.signal(Signal.THROTTLE, 5.0) == 0.0 and not relay.paused  # stray
    assert relay.signal(Signal.THROTTLE, 5.0) == 1.0  # repeated: the pause starts again


def test_every_signal_counts_without_stray_after() -> None:
    domain = Destination("outlook.com", DestinationLimits(connections=2, pause_initial=1.0))
    for _ in range(50):
        domain.success(0.0)
    domain.signal(Signal.THROTTLE, 0.0, "451 4.7.650 rate limited")  # an explicit "slow down"
    assert domain.window == 1
    with pytest.raises(ValueError):
        DestinationLimits(stray_after=0)


def test_a_destination_without_a_cap_pauses_at_the_first_signal() -> None:
    destination = Destination("d", DestinationLimits(connections=None, pause_initial=2.0))
    assert destination.signal(Signal.THROTTLE, 0.0) == 2.0
    assert destination.window is None


def run(
    scheduler: DomainScheduler[str], until: float, outcome: dict[str, str], step: float = 0.01
) -> dict[str, list[float]]:
    """Drive the scheduler on a fake clock: each taken letter finishes at once with ``outcome`` of its
    domain ("ok" or "throttle"); a throttled letter comes back after 0.5 s. Times each domain sent."""
    now = 0.0
    sent: dict[str, list[float]] = {domain: [] for domain in outcome}
    while now <= until and len(scheduler):
        job, wait = scheduler.take(now)
        if job is None:
            now += min(wait, step) if wait != float("inf") else step
            continue
        domain = job.split(":")[0]
        if outcome[domain] == "ok":
            scheduler.feedback(domain, now)
            sent[domain].append(round(now, 3))
        else:
            scheduler.feedback(domain, now, Signal.THROTTLE, "451 4.7.650 rate limited")
            scheduler.add(domain, job, group="exchange", not_before=now + 0.5)
        scheduler.done(domain, now)
    return sent


def test_a_throttling_group_slows_down_while_other_domains_keep_their_pace() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(
        domain_rate=10.0, domain_connections=2, group_connections=4, pause_initial=1.0, pause_max=4.0
    )
    for n in range(30):
        scheduler.add("utrecht.nl", f"utrecht.nl:{n}", group="exchange")
        scheduler.add("zeist.nl", f"zeist.nl:{n}", group="exchange")
        scheduler.add("ede.nl", f"ede.nl:{n}", group="ede-mx")
    sent = run(scheduler, 10.0, {"utrecht.nl": "throttle", "zeist.nl": "throttle", "ede.nl": "ok"})
    assert len(sent["ede.nl"]) == 30 and sent["ede.nl"][-1] == pytest.approx(2.9)  # its own 10/s
    exchange, _ = scheduler.destinations("zeist.nl")[1], None
    assert exchange is not None and exchange.window == 1 and exchange.gave_up
    # Both Exchange domains' letters were handed back for a later run, not retried forever.
    given_up = scheduler.given_up()
    assert len(given_up) == 60 and {job.split(":")[0] for job in given_up} == {"utrecht.nl", "zeist.nl"}
    assert len(scheduler) == 0


def test_letters_of_a_paused_destination_step_off_the_queue_until_the_pause_ends() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(domain_connections=1, pause_initial=2.0, pause_max=60.0)
    for n in range(3):
        scheduler.add("a.nl", f"a.nl:{n}")
    scheduler.add("b.nl", "b.nl:0")
    job, _ = scheduler.take(0.0)
    assert job == "a.nl:0"
    assert scheduler.feedback("a.nl", 0.0, Signal.THROTTLE) == 2.0  # cap 1: pauses at once
    scheduler.add("a.nl", "a.nl:0", not_before=0.5)
    scheduler.done("a.nl", 0.0)
    assert scheduler.ready == 1  # only b.nl's letter: the producer sees a.nl's as held
    assert len(scheduler) == 4
    assert scheduler.take(0.1) == ("b.nl:0", 0.0)
    scheduler.done("b.nl", 0.1)
    job, wait = scheduler.take(0.2)
    assert job is None and wait == pytest.approx(1.8)
    job, _ = scheduler.take(2.0)
    assert job is not None and job.startswith("a.nl")
    scheduler.feedback("a.nl", 2.0)  # a success: the pause is over
    scheduler.done("a.nl", 2.0)
    assert scheduler.take(2.0)[0] == "a.nl:2"  # the queue flows again, in order


def test_a_retry_waits_for_its_not_before_time() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler()
    scheduler.add("a.nl", "retry", not_before=5.0)
    job, wait = scheduler.take(1.0)
    assert job is None and wait == pytest.approx(4.0)
    assert scheduler.take(5.0) == ("retry", 0.0)
    scheduler.done("a.nl", 5.0)
    assert len(scheduler) == 0 and scheduler.take(6.0) == (None, float("inf"))


def test_an_idle_domain_and_its_group_are_forgotten() -> None:
    scheduler: DomainScheduler[str] = DomainScheduler(group_connections=3)
    scheduler.add("a.nl", "a", group="g")
    assert scheduler.take(0.0)[0] == "a"
    scheduler.feedback("a.nl", 0.0)
    scheduler.done("a.nl", 0.0)
    with pytest.raises(KeyError):
        scheduler.destinations("a.nl")
