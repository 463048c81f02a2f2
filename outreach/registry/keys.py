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
