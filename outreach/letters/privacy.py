"""The privacy notice every letter carries unless a campaign switches it off (AVG/GDPR art. 13 and 14).

It says who writes, why this person gets the letter, where the address came from and how to object.
A campaign may replace the text with its own templates ([privacy] text/html in campaign.toml).
"""

from __future__ import annotations

from outreach.models import Role

# "U ontvangt deze brief omdat u ..." per role; {gemeente} is the municipality's name.
_WHY: dict[str, str] = {
    Role.RAADSLID: "lid bent van de gemeenteraad van {gemeente}",
    Role.WETHOUDER: "wethouder bent in {gemeente}",
    Role.BURGEMEESTER: "burgemeester bent van {gemeente}",
    Role.LOCO_BURGEMEESTER: "loco-burgemeester bent van {gemeente}",
    Role.GRIFFIER: "griffier bent van de gemeenteraad van {gemeente}",
    Role.GRIFFIE: "de griffie bent van de gemeenteraad van {gemeente}",
    Role.BURGERRAADSLID: "burgerraadslid bent in {gemeente}",
    Role.COMMISSIELID: "lid bent van een raadscommissie in {gemeente}",
    Role.FRACTIEASSISTENT: "fractieassistent bent in de gemeenteraad van {gemeente}",
    Role.SECRETARIS: "gemeentesecretaris bent van {gemeente}",
}
_SUPPORTER = "zich bij ons heeft aangemeld om berichten over ons werk te ontvangen"


def why_phrase(role: str, municipality: str | None) -> str:
    """The end of 'U ontvangt deze brief omdat u ...', without a full stop."""
    if role == Role.SUPPORTER:
        return _SUPPORTER
    template = _WHY.get(role, "een bestuurlijke functie heeft in {gemeente}")
    return template.format(gemeente=municipality or "uw gemeente")


PRIVACY_TEXT = """\
Waarom ontvangt u dit bericht?
Dit bericht komt van {{ campaign.from_name }}. U ontvangt het omdat u
{{ privacy.why }}.
{% if copy %}
Als griffie ontvangt u een kopie, zodat de brief ook via het officiële
kanaal bij de raad ligt.
{% endif %}
Uw e-mailadres komt uit
{{ privacy.address_source }}.
Wij gebruiken het alleen om u te schrijven over kinderen in de jeugdzorg,
op grond van ons gerechtvaardigd belang (artikel 6, lid 1, onder f AVG),
en geven het aan niemand door. U kunt daartegen bezwaar maken: antwoord op
dit bericht met "afmelden"\
{% if unsubscribe_url %} of gebruik {{ unsubscribe_url }}{% endif %}\
{% if unsubscribe_mailto %} of mail naar {{ unsubscribe_address }}{% endif %}.
Wij schrijven u daarna niet meer.
"""

PRIVACY_HTML = """\
<div class="privacy" style="margin-top:2em;padding-top:1em;border-top:1px solid #ccc;\
font-size:12px;color:#555">
<p><strong>Waarom ontvangt u dit bericht?</strong><br>
Dit bericht komt van {{ campaign.from_name }}. U ontvangt het omdat u {{ privacy.why }}.
{% if copy %}Als griffie ontvangt u een kopie, zodat de brief ook via het officiële kanaal bij de raad ligt.
{% endif %}\
Uw e-mailadres komt uit {{ privacy.address_source }}. Wij gebruiken het alleen om u te schrijven
over kinderen in de jeugdzorg, op grond van ons gerechtvaardigd belang (artikel 6, lid 1, onder f AVG),
en geven het aan niemand door. U kunt daartegen bezwaar maken: antwoord op dit bericht met
&ldquo;afmelden&rdquo;\
{% if unsubscribe_url %} of <a href="{{ unsubscribe_url }}">meld u hier af</a>{% endif %}\
{% if unsubscribe_mailto %} of mail naar <a href="{{ unsubscribe_mailto }}">{{ unsubscribe_address }}</a>\
{% endif %}. Wij schrijven u daarna niet meer.</p>
</div>
"""
