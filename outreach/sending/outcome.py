"""Recording what became of a letter: the transition, the run's counters, the error note, the progress bar.

Every end of a try goes through ``Outcomes.record`` (the send loop had the same four steps written out
five times). The transition is queued with the state writer, which commits it no later than this
worker's next ``sending`` mark.
"""

from __future__ import annotations

from datetime import datetime

from outreach.models import DeliveryState, utcnow
from outreach.sending.jobs import Job
from outreach.sending.summary import Progress, SendSummary
from outreach.sending.writer import StateWriter, Transition

#: The summary's counter of each final state of a run.
_COUNTERS: dict[DeliveryState, str] = {
    DeliveryState.SENT: "sent",
    DeliveryState.DEFERRED: "deferred",
    DeliveryState.FAILED: "failed",
    DeliveryState.UNKNOWN: "unknown",
    DeliveryState.SKIPPED: "skipped",
    DeliveryState.HELD: "held",
}


class Outcomes:
    def __init__(self, writer: StateWriter, summary: SendSummary, progress: Progress) -> None:
        self._writer = writer
        self._summary = summary
        self._progress = progress

    def record(
        self,
        delivery_id: int,
        state: DeliveryState,
        *,
        code: int | None = None,
        error: str | None = None,
        recipient: str | None = None,
        next_attempt_at: datetime | None = None,
        sent_at: datetime | None = None,
        keep_claim: bool = False,
        uncount: bool = False,
        final: bool = True,
        note: bool = True,
    ) -> None:
        """Queue the delivery's transition. ``final``: the letter is done for this run (counted, shown
        in the progress bar, an error noted for the summary); a retry later in the run is not. ``note``:
        the error goes into the summary's recent errors (a skipped letter's reason does not)."""
        self._writer.record(
            Transition(
                delivery_id,
                state,
                code=code,
                error=error,
                next_attempt_at=next_attempt_at,
                sent_at=sent_at,
                keep_claim=keep_claim,
                uncount=uncount,
            )
        )
        if not final:
            return
        counter = _COUNTERS.get(state)
        if counter is not None:
            setattr(self._summary, counter, getattr(self._summary, counter) + 1)
        if note and state != DeliveryState.SENT and error:
            if recipient is None:
                self._summary.note(error)
            else:
                self._summary.note(f"{recipient}: {f'{code} ' if code else ''}{error}")
        self._progress.advance(state)

    def sent(self, job: Job, code: int, note: str | None) -> None:
        self.record(job.row.id, DeliveryState.SENT, code=code, error=note, sent_at=utcnow())
