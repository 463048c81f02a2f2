"""Per-delivery tokens and the identifiers built from them.

One random token per delivery ties everything that comes back to the letter that went out: the
Message-ID (``<token@campaign-domain>``, matched by In-Reply-To/References), the VERP envelope sender
(``bounces+token@domain``) and the unsubscribe link. Tokens are lowercase base32 so that a mail server
that folds the case of a local part does not break the match.
"""

from __future__ import annotations

import base64
import re
import secrets

_TOKEN_RE = re.compile(r"^[a-z2-7]{16}$")
_MESSAGE_ID_RE = re.compile(r"<([a-z2-7]{16})@[^>\s]+>", re.IGNORECASE)


def new_token() -> str:
    """16 lowercase base32 characters, 80 random bits."""
    return base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


def message_id(token: str, domain: str) -> str:
    """The Message-ID header value for a delivery: on the campaign's domain, never socket.getfqdn()."""
    return f"<{token}@{domain}>"


def tokens_in_references(header_value: str) -> list[str]:
    """Tokens of our Message-IDs in an In-Reply-To or References header, most recent last."""
    return [match.group(1).lower() for match in _MESSAGE_ID_RE.finditer(header_value or "")]


def verp_address(token: str, local: str, domain: str) -> str:
    """VERP envelope sender: ``bounces+token@domain``."""
    return f"{local}+{token}@{domain}"


def token_from_verp(address: str) -> str | None:
    """The token in a VERP address (``bounces+token@domain``), or None."""
    local = address.strip().strip("<>").rsplit("@", 1)[0]
    if "+" not in local:
        return None
    candidate = local.rsplit("+", 1)[1].lower()
    return candidate if is_token(candidate) else None
