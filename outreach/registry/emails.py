"""E-mail address checking for imports: email-validator's rules, without DNS, fast enough for 100k rows.

email-validator spends two thirds of its time validating the domain (IDNA/UTS-46 per character), and a
council list repeats a few hundred domains. ``AddressChecker`` validates each domain once through
email-validator itself and reuses the result for plain ASCII dot-atom local parts, the shape of nearly
every address; anything else goes through ``validate_email`` whole. ``tests/test_registry_emails.py``
checks that both paths agree on normalised forms and on what they reject.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DOT_ATOM_TEXT,
    EMAIL_MAX_LENGTH,
)

_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


class InvalidAddress(ValueError):
    """The address is not usable; the message says why, in email-validator's words."""


@dataclass(frozen=True)
class _Domain:
    domain: str  # normalised, internationalised form
    ascii_domain: str  # IDNA form


class AddressChecker:
    """Validates and normalises addresses; one instance per import (it caches domains)."""

    def __init__(self) -> None:
        self._domains: dict[str, _Domain | None] = {}

    def normalize(self, address: str) -> str:
        """email-validator's normalised form of ``address`` (no DNS), or ``InvalidAddress``."""
        local, at, domain = address.rpartition("@")
        if at and local and DOT_ATOM_TEXT.match(local):
            known = self._domains.get(domain) if domain in self._domains else self._domain(domain)
            if known is not None:
                if local.lower() in _CASE_INSENSITIVE:
                    local = local.lower()  # RFC 2142 mailbox names, as email-validator does
                normalized = f"{local}@{known.domain}"
                if address.isascii() and known.domain.isascii():
                    fits = len(address) <= EMAIL_MAX_LENGTH  # normalising only lower-cased the domain
                else:
                    fits = (
                        len(address.encode()) <= EMAIL_MAX_LENGTH
                        and len(normalized.encode()) <= EMAIL_MAX_LENGTH
                        and len(f"{local}@{known.ascii_domain}") <= EMAIL_MAX_LENGTH
                    )
                if fits:
                    return normalized
        return self._full(address)

    def _domain(self, domain: str) -> _Domain | None:
        if domain not in self._domains:
            try:
                checked = validate_email(f"postmaster@{domain}", check_deliverability=False)
            except EmailNotValidError:
                self._domains[domain] = None
            else:
                self._domains[domain] = _Domain(checked.domain, checked.ascii_domain)
        return self._domains[domain]

    @staticmethod
    def _full(address: str) -> str:
        try:
            return validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise InvalidAddress(str(exc)) from None
