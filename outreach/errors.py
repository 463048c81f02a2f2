"""One exception tree for everything a user can run into.

The CLI catches ``OutreachError`` once, prints ``Error: <message>`` on stderr and exits with the class's
``exit_code``. Messages name the place (file:row:column, campaign, contact, host:port) and, where there is
one, the fix. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class OutreachError(Exception):
    """Base class: a problem with the user's data or the outside world (exit 1)."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(OutreachError):
    """The command line itself is wrong (exit 2), e.g. mutually exclusive options."""

    exit_code = 2


class ConfigError(OutreachError):
    """A setting is missing or malformed (outreach.toml, OUTREACH_* variables, campaign.toml)."""


class DatabaseError(OutreachError):
    """The database cannot be opened, is too new for this version, or is busy."""


class ImportFileError(OutreachError):
    """A contacts file cannot be imported as a whole (empty, binary, no e-mail column, unknown format)."""


class NotFoundError(OutreachError):
    """A named thing (contact, campaign, municipality) does not exist."""


class CampaignError(OutreachError):
    """A campaign folder is malformed, not approved, or changed since approval."""


class TemplateError(OutreachError):
    """A letter template cannot be rendered (syntax error, missing field for a recipient)."""


class HeaderInjectionError(OutreachError):
    """A value bound for a mail header contains a control character (CR, LF, NUL, ...)."""


class AddressError(OutreachError):
    """An e-mail address cannot be put on an envelope or in a header (malformed, needs SMTPUTF8)."""


class SmtpError(OutreachError):
    """The SMTP server cannot be used at all: connection refused, TLS or authentication failure."""


class ImapError(OutreachError):
    """The IMAP server cannot be used: connection, TLS or login failure."""


class ServeError(OutreachError):
    """`outreach serve` cannot start: the address cannot be bound, the base URL is missing."""
