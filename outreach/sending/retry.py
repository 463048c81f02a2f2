"""When a letter that met a transient failure is tried again: pure arithmetic, no clock of its own.

A failed try never holds the connection that carried it: the letter goes back to the scheduler with a
not-before time (``RetryPolicy.after_failure``) and the connection takes the next letter. Within a run a
letter gets ``tries_per_run`` tries with exponential backoff and jitter; then it waits for a later run
(``next_attempt_at``: ``next_run_delay`` doubling per run up to ``next_run_delay_max``, ±10 %); after
``max_tries`` tries in all it is given up. Tries that failed because the destination as a whole was down
or slowing us down do not count towards ``max_tries`` (``outreach.sending.destination``). A try that the
SMTP server failed as a whole (421, a connection lost before the body) says nothing about the letter: it
goes again at once on another connection, and the server's own window and pause pace such retries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

_RANDOM = random.Random()


class RetryAction(StrEnum):
    AGAIN = "again"  # try again in this run, after ``delay`` seconds
    LATER = "later"  # deferred: a later run tries again from ``next_attempt_at``
    GIVE_UP = "give-up"  # failed: the maximum number of tries is reached


@dataclass(frozen=True)
class RetryDecision:
    action: RetryAction
    delay: float = 0.0  # AGAIN: seconds from now (monotonic)
    next_attempt_at: datetime | None = None  # LATER: UTC
    total: int = 0  # tries counted against the letter so far, over all runs


@dataclass(frozen=True)
class RetryPolicy:
    tries_per_run: int = 3
    max_tries: int = 15
    backoff_initial: float = 2.0  # seconds before the second try in a run
    backoff_max: float = 60.0
    next_run_delay: timedelta = timedelta(minutes=15)
    next_run_delay_max: timedelta = timedelta(hours=6)

    def __post_init__(self) -> None:
        if self.tries_per_run < 1 or self.max_tries < 1:
            raise ValueError("tries_per_run and max_tries must be at least 1")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_initial must be >= 0 and backoff_max >= backoff_initial")

    def backoff(self, tries_this_run: int, rng: random.Random | None = None) -> float:
        """Seconds before the next try after ``tries_this_run`` failed ones in this run: the initial
        backoff doubling per try, plus up to one initial backoff of jitter, at most ``backoff_max``
        (tenacity's ``wait_exponential_jitter``, which this replaces)."""
        jitter = (rng or _RANDOM).uniform(0, self.backoff_initial)
        exponential = self.backoff_initial * 2.0 ** max(0, tries_this_run - 1)
        return min(self.backoff_max, exponential + jitter)

    def next_run(self, total: int, now: datetime, rng: random.Random | None = None) -> datetime:
        """When a later run may try again, after ``total`` counted tries: ``next_run_delay`` doubling
        per full run of tries, capped, ±10 % so that a greylisting domain's letters spread out."""
        rounds = max(0, total // self.tries_per_run - 1)
        delay = min(self.next_run_delay * float(2**rounds), self.next_run_delay_max)
        return now + delay * (rng or _RANDOM).uniform(0.9, 1.1)

    def after_failure(
        self,
        *,
        tries_before_run: int,
        tries_this_run: int,
        counted_this_run: int,
        now: datetime,
        stopping: bool = False,
        server_failed: bool = False,
        rng: random.Random | None = None,
    ) -> RetryDecision:
        """What happens to a letter whose latest try failed transiently.

        ``tries_before_run``: tries counted in earlier runs (the delivery's ``attempts``);
        ``tries_this_run``: tries of this run, the failed one included; ``counted_this_run``: those of
        them that count against the letter (the rest failed for the destination as a whole);
        ``server_failed``: this try failed for the SMTP server as a whole, so a retry in this run needs
        no backoff of its own. A run that is stopping tries nothing again.
        """
        total = tries_before_run + counted_this_run
        if total >= self.max_tries:
            return RetryDecision(RetryAction.GIVE_UP, total=total)
        if stopping or tries_this_run >= self.tries_per_run:
            return RetryDecision(
                RetryAction.LATER, next_attempt_at=self.next_run(total, now, rng), total=total
            )
        delay = 0.0 if server_failed else self.backoff(tries_this_run, rng)
        return RetryDecision(RetryAction.AGAIN, delay=delay, total=total)
