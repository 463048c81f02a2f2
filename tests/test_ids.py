from __future__ import annotations

from outreach.letters.ids import (
    is_token,
    message_id,
    new_token,
    token_from_verp,
    tokens_in_references,
    verp_address,
)


def test_tokens_are_unique_and_case_safe() -> None:
    tokens = {new_token() for _ in range(10_000)}
    assert len(tokens) == 10_000
    assert all(is_token(t) and t == t.lower() for t in tokens)


def test_message_id_round_trips_through_references() -> None:
    a, b = new_token(), new_token()
    ours = message_id(a, "hetvergetenkind.nl")
    refs = f"<CAF=xyz@mail.gmail.com> {ours}\r\n {message_id(b, 'x.nl').upper()}"
    assert tokens_in_references(refs) == [a, b]
    assert tokens_in_references("<not-ours@example.org>") == []


def test_verp_round_trip() -> None:
    token = new_token()
    assert token_from_verp(verp_address(token, "bounces", "hetvergetenkind.nl")) == token
    assert token_from_verp("<BOUNCES+" + token.upper() + "@hetvergetenkind.nl>") == token
    assert token_from_verp("bounces@hetvergetenkind.nl") is None
    assert token_from_verp("info+nieuws@hetvergetenkind.nl") is None
