"""The derived keys the registry matches on. One definition, used by import, suppression and erasure."""

from __future__ import annotations

import hashlib
import unicodedata


def email_key(address: str) -> str:
    """Case-folded, NFC, trimmed: two spellings of one mailbox meet here (RFC 5321 local parts are
    case-sensitive in theory, never in practice at Dutch municipalities)."""
    return unicodedata.normalize("NFC", address.strip()).casefold()


def email_hash(key: str) -> str:
    """sha256 of an email_key: what a suppression keeps after the person is forgotten."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def office_key(key: str, cbs_code: str | None, role: str) -> str:
    """The identity of one person in one office: the same mailbox may serve several people (griffie)."""
    return f"{key}|{cbs_code or ''}|{role}"


REGISTER_PREFIX = "register:"


def register_reference(text: str) -> str | None:
    """The register id in "register:28990203" or "28990203" (how `contacts show/export/forget` name an
    office holder without an address), or None for anything else (an e-mail address)."""
    text = text.strip()
    if text.casefold().startswith(REGISTER_PREFIX):
        text = text[len(REGISTER_PREFIX) :].strip()
    return text if text.isdigit() else None


def register_key(register_id: str) -> str:
    """What stands in for the email_key of a register office holder in a suppression: forgetting a
    person without an address keeps sha256("register:<id>"), so a re-import cannot bring them back."""
    return f"{REGISTER_PREFIX}{register_id}"


def sort_name(achternaam: str | None, tussenvoegsel: str | None = None) -> str:
    """Sort key: surname without particle ("van der Berg" sorts under B), accents folded."""
    name = (achternaam or "").strip()
    particle = (tussenvoegsel or "").strip()
    if particle and name.casefold().startswith(particle.casefold() + " "):
        name = name[len(particle) + 1 :]
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def fold(text: str) -> str:
    """Case- and diacritics-insensitive form for matching names: 'Súdwest-Fryslân' ~ 'sudwest-fryslan'."""
    decomposed = unicodedata.normalize("NFKD", text.strip())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())
