"""DKIM signing of composed letters (RFC 6376), with dkimpy.

Signing runs on the producer's thread, never on the event loop: dkimpy computes RSA in Python and takes
several milliseconds per letter (docs/performance.md). Most relays sign outgoing mail themselves; sign
here only when the campaign's domain publishes a key the relay does not hold.
"""

from __future__ import annotations

from pathlib import Path

import dkim
from dkim.crypto import parse_pem_private_key

from outreach.errors import CampaignError

# Signed even when absent, so nobody can add them on the way (RFC 6376 8.15, "over-signing").
# List-Unsubscribe and List-Unsubscribe-Post must be covered for one-click unsubscribe (RFC 8058 4).
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"cc",
    b"reply-to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)


class DkimSigner:
    def __init__(self, selector: str, domain: str, key_file: Path) -> None:
        try:
            key = key_file.read_bytes()
        except OSError as exc:
            raise CampaignError(f"{key_file}: cannot read the DKIM key: {exc.strerror}") from None
        try:
            parsed = parse_pem_private_key(key)
        except Exception as exc:  # dkimpy raises its own or ASN.1 errors for a malformed file
            raise CampaignError(f"{key_file}: not a PEM RSA private key ({exc})") from None
        bits = int(parsed["modulus"]).bit_length()
        if bits < 2048:
            raise CampaignError(
                f"{key_file}: the DKIM key has {bits} bits; receivers expect RSA keys of at least 2048 bits",
                hint="openssl genrsa -out dkim.pem 2048",
            )
        self._selector = selector.encode("ascii")
        self._domain = domain.encode("ascii")
        self._key = key

    def sign(self, message: bytes) -> bytes:
        """``message`` (CRLF) with a DKIM-Signature header in front."""
        signature = dkim.sign(
            message,
            self._selector,
            self._domain,
            self._key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=list(SIGNED_HEADERS),
            linesep=b"\r\n",
        )
        return bytes(signature) + message
