"""RetryPolicy: tries per run, backoff with jitter, the next-run delay and the maximum, on fixed clocks."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from outreach.sending.retry import RetryAction, RetryPolicy

NOW = datetime(2026, 12, 1, 9, 0, 0)


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    policy = RetryPolicy(backoff_initial=2.0, backoff_max=20.0)
    rng = random.Random(7)
    for tries, low in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0)]:
        delays = [policy.backoff(tries, rng) for _ in range(200)]
        assert min(delays) >= low and max(delays) <= min(20.0, low + 2.0)
        assert max(delays) - min(delays) > 0.5 or low + 2.0 > 20.0  # jittered, not one value
    assert {policy.backoff(10, rng) for _ in range(20)} == {20.0}


def test_a_failed_try_is_retried_in_the_run_then_deferred_to_a_later_run() -> None:
    policy = RetryPolicy(tries_per_run=3, max_tries=15)
    rng = random.Random(1)
    first = policy.after_failure(tries_before_run=0, tries_this_run=1, counted_this_run=1, now=NOW, rng=rng)
    second = policy.after_failure(tries_before_run=0, tries_this_run=2, counted_this_run=2, now=NOW, rng=rng)
    third = policy.after_failure(tries_before_run=0, tries_this_run=3, counted_this_run=3, now=NOW, rng=rng)
    assert (first.action, second.action, third.action) == (RetryAction.AGAIN,) * 2 + (RetryAction.LATER,)
    assert 2.0 <= first.delay <= 4.0 and 4.0 <= second.delay <= 6.0
    assert third.next_attempt_at is not None
    assert NOW + timedelta(minutes=13.5) <= third.next_attempt_at <= NOW + timedelta(minutes=16.5)
    assert third.total == 3


def test_the_next_run_delay_doubles_per_run_up_to_its_maximum() -> None:
    policy = RetryPolicy(tries_per_run=3, next_run_delay=timedelta(minutes=15))
    rng = random.Random(3)
    waits = []
    for run in range(1, 8):
        decision = policy.after_failure(
            tries_before_run=3 * (run - 1), tries_this_run=3, counted_this_run=3, now=NOW, rng=rng
        )
        if decision.action is RetryAction.LATER:
            assert decision.next_attempt_at is not None
            waits.append((decision.next_attempt_at - NOW) / timedelta(minutes=1))
    expected = [15, 30, 60, 120]
    assert [round(w / e, 1) for w, e in zip(waits, expected, strict=False)] == pytest.approx(
        [1.0] * 4, abs=0.11
    )
    assert len(waits) == 4  # the fifth run reaches 15 tries


def test_a_letter_is_given_up_at_the_maximum_even_within_a_run() -> None:
    policy = RetryPolicy(tries_per_run=3, max_tries=4)
    decision = policy.after_failure(tries_before_run=3, tries_this_run=1, counted_this_run=1, now=NOW)
    assert (decision.action, decision.total) == (RetryAction.GIVE_UP, 4)


def test_tries_the_destination_failed_do_not_count_towards_the_maximum() -> None:
    policy = RetryPolicy(tries_per_run=3, max_tries=4)
    # Three tries this run, none counted (the server was down): deferred, never given up.
    decision = policy.after_failure(tries_before_run=3, tries_this_run=3, counted_this_run=0, now=NOW)
    assert (decision.action, decision.total) == (RetryAction.LATER, 3)


def test_a_stopping_run_tries_nothing_again() -> None:
    decision = RetryPolicy().after_failure(
        tries_before_run=0, tries_this_run=1, counted_this_run=1, now=NOW, stopping=True
    )
    assert decision.action is RetryAction.LATER


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(tries_per_run=0)
    with pytest.raises(ValueError):
        RetryPolicy(backoff_initial=5.0, backoff_max=1.0)


def test_a_try_the_server_failed_as_a_whole_goes_again_at_once() -> None:
    # A 421 or a connection lost before the body says nothing about the letter: no backoff of its own
    # (the server's window and pause pace such retries), still within the tries of this run.
    policy = RetryPolicy(tries_per_run=3, backoff_initial=2.0)
    again = [
        policy.after_failure(
            tries_before_run=0, tries_this_run=tries, counted_this_run=0, now=NOW, server_failed=True
        )
        for tries in (1, 2)
    ]
    assert [(d.action, d.delay) for d in again] == [(RetryAction.AGAIN, 0.0)] * 2
    third = policy.after_failure(
        tries_before_run=0, tries_this_run=3, counted_this_run=0, now=NOW, server_failed=True
    )
    assert third.action is RetryAction.LATER and third.total == 0
    # A refusal of the letter itself keeps its backoff.
    refused = policy.after_failure(tries_before_run=0, tries_this_run=1, counted_this_run=1, now=NOW)
    assert refused.action is RetryAction.AGAIN and refused.delay >= 2.0
