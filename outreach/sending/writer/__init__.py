"""The state writer: delivery state transitions in group commits (``core``), one committer per database
backend with its SQL (``sqlite``, ``postgres``) behind the ``Committer`` protocol (``committer``)."""

from outreach.sending.errors import WriterFailedError
from outreach.sending.writer.committer import Committer, Scope, Transition
from outreach.sending.writer.core import StateWriter
from outreach.sending.writer.sqlite import WalCheckpointer

__all__ = ["Committer", "Scope", "StateWriter", "Transition", "WalCheckpointer", "WriterFailedError"]
