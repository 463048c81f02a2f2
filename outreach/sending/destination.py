"""A destination's limits and its feedback: how many letters it takes at once, how fast, and when to back off.

A destination is whoever receives letters: one recipient domain, one MX provider group (300 gemeente
domains behind Exchange Online are one receiver), or the SMTP server we connect to. Like Postfix's
per-destination concurrency feedback, each keeps a concurrency window between 1 and its configured cap:

- a **throttle signal** (421, a 4.7.x rate limit such as ``451 4.7.650``, ``4.3.2``) or a **failure as a
  whole** (a refused or failing connection, no answer) shrinks the window by one; once it is down to one
  letter at a time, each further signal without a success in between pauses the destination, for a
  pause that doubles per signal up to ``pause_max``;
- every ``window`` successes in a row widen it by one again, and a success ends the pause;
- with ``stray_after``, a signal that comes after at least that many successes since the previous one
  is a stray fault of a destination that works (the SMTP server dropping one connection in many): it
  neither shrinks the window nor pauses. Signals close together still do: a 421 repeated is overload.

Random faults spread over many letters therefore barely move the window, while a receiver that keeps
refusing soon gets one letter at a time and then nothing for a growing while, and the others keep their
pace. ``failures`` counts failures as a whole in a row: ``down`` says the destination is plainly down.
Pure logic over a ``now`` value (monotonic seconds): the tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from outreach.sending.rate import RateLimiter


class Signal(StrEnum):
    THROTTLE = "throttle"  # the destination asks us to slow down (421, 4.7.x rate limit, 4.3.2)
    FAILURE = "failure"  # the destination failed as a whole (refused, silent, lost before the body)


@dataclass(frozen=True)
class DestinationLimits:
    connections: int | None = None  # the cap on letters in flight at once (None: no cap)
    rate: float | None = None  # letters per second (None: unlimited)
    pause_initial: float = 1.0  # seconds: the first pause, once the window is down to one
    pause_max: float = 300.0
    down_after: int = 5  # failures as a whole in a row, without a success, that mean "down"
    stray_after: int | None = None  # successes since the previous signal that make a signal stray

    def __post_init__(self) -> None:
        if self.connections is not None and self.connections < 1:
            raise ValueError(f"connections must be at least 1, not {self.connections}")
        if self.down_after < 1:
            raise ValueError(f"down_after must be at least 1, not {self.down_after}")
        if self.stray_after is not None and self.stray_after < 1:
            raise ValueError(f"stray_after must be at least 1, not {self.stray_after}")


class Destination:
    """One destination's live state: window, letters in flight, rate, pause, failures in a row."""

    __slots__ = (
        "_limiter",
        "_since_signal",
        "_successes",
        "failures",
        "in_flight",
        "key",
        "last_error",
        "limits",
        "paused_until",
        "signals",
        "streak",
        "window",
    )

    def __init__(self, key: str, limits: DestinationLimits) -> None:
        self.key = key
        self.limits = limits
        self.window: int | None = limits.connections  # the current concurrency window (None: no cap)
        self.in_flight = 0
        self.paused_until = 0.0
        self.streak = 0  # signals while the window was at one, since the last success
        self.failures = 0  # failures as a whole in a row, since the last success
        self.signals = 0  # every signal in this run (for the summary and the tests)
        self.last_error = ""
        self._successes = 0  # successes since the window last changed
        # Successes since the previous signal: a fresh destination must show it works before a fault
        # of its counts as stray.
        self._since_signal = 0
        self._limiter = RateLimiter(limits.rate)

    def delay(self, now: float) -> float:
        """Seconds until this destination takes another letter: 0.0 now, inf while its window is full."""
        if self.window is not None and self.in_flight >= self.window:
            return float("inf")
        return max(self.paused_until - now, self._limiter.delay(now), 0.0)

    def take(self, now: float) -> None:
        """A letter goes to this destination now (call only when ``delay(now)`` is 0)."""
        self.in_flight += 1
        self._limiter.consume(now)

    def done(self) -> None:
        self.in_flight -= 1

    def idle(self, now: float) -> bool:
        """Nothing in flight, nothing learnt, no rate to keep: the scheduler may forget it."""
        return (
            self.in_flight == 0
            and self.window == self.limits.connections
            and self.streak == 0
            and self.failures == 0
            and self._limiter.delay(now) == 0.0
        )

    @property
    def paused(self) -> bool:
        return self.streak > 0

    @property
    def gave_up(self) -> bool:
        """The pause has grown to its maximum: this destination takes nothing more in this run."""
        return (
            self.streak > 0 and self.limits.pause_initial * 2.0 ** (self.streak - 1) >= self.limits.pause_max
        )

    @property
    def down(self) -> bool:
        return self.failures >= self.limits.down_after

    def success(self, now: float) -> None:
        self.streak = 0
        self.failures = 0
        self.paused_until = min(self.paused_until, now)
        self._since_signal += 1
        self._successes += 1
        cap = self.limits.connections
        if (
            self.window is not None
            and cap is not None
            and self.window < cap
            and self._successes >= self.window
        ):
            self.window += 1
            self._successes = 0

    def signal(self, kind: Signal, now: float, error: str = "") -> float:
        """Feedback from one letter or connection; returns the pause it started (0.0: none)."""
        self.signals += 1
        self.last_error = error or self.last_error
        if kind is Signal.FAILURE:
            self.failures += 1
        stray = self.limits.stray_after is not None and self._since_signal >= self.limits.stray_after
        self._since_signal = 0
        if stray:
            return 0.0
        self._successes = 0
        # Without a cap there is no window to shrink: the destination pauses at once.
        if self.window is not None and self.window > 1:
            self.window -= 1
            return 0.0
        pause = min(self.limits.pause_max, self.limits.pause_initial * 2.0**self.streak)
        self.streak += 1
        self.paused_until = max(self.paused_until, now + pause)
        return pause
