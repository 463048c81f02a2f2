"""What the opt-in page promises, by version: the version shown is recorded with every opt-in (the proof
of what the person agreed to). Never edit a published version; add a new one and point CURRENT at it."""

from __future__ import annotations

OPTIN_TEXTS: dict[str, tuple[str, ...]] = {
    "2026-1": (
        "Een paar keer per jaar een e-mail van Het Vergeten Kind over kinderen in de jeugdzorg: wat wij "
        "zien in gemeenten, onderzoek, handreikingen voor raad en college, en uitnodigingen voor "
        "bijeenkomsten.",
        "Wij gebruiken daarvoor alleen uw naam, uw functie, uw gemeente en dit e-mailadres. Wij geven die "
        "aan niemand anders.",
        "Afmelden kan altijd, met de link onderaan elke e-mail of door te antwoorden met ‘afmelden’.",
    ),
}
CURRENT = "2026-1"
TOPICS = "mailings van Het Vergeten Kind"
