"""Rendering: the campaign's templates compiled once, and each recipient's letter rendered from them.

Templates run in Jinja's ``SandboxedEnvironment`` with a strict undefined: a field the template uses
but a recipient lacks is an error naming the recipient, the template, the line and the field, never an
empty gap in a letter. Fields a contact does not have (no party, no first name) are *absent* from the
context rather than None, so a template must say what to do without them
(``{% if contact.party is defined %}`` or ``{{ contact.party | default("") }}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from jinja2 import (
    BaseLoader,
    Environment,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateRuntimeError,
    TemplateSyntaxError,
    meta,
)
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from outreach.errors import TemplateError
from outreach.letters import limits
from outreach.letters.address import address_lines
from outreach.letters.campaign import CampaignConfig
from outreach.letters.dates import long_date, short_date
from outreach.letters.limits import CappedEnvironment
from outreach.letters.privacy import PRIVACY_HTML, PRIVACY_TEXT, why_phrase
from outreach.letters.recipients import Recipient
from outreach.letters.salutation import aanhef, aanspreekvorm
from outreach.models import Role

# ------------------------------------------------------------------------------------------- templates


class Fields(dict[str, Any]):
    """A dict that knows its name in the template, so a missing key reads 'contact.party is undefined'."""

    __slots__ = ("path",)

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        super().__init__((k, v) for k, v in values.items() if v is not None and v != "")
        self.path = path


class _Undefined(StrictUndefined):
    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint:
            return self._undefined_hint
        owner = self._undefined_obj
        if isinstance(owner, Fields):
            return f"field '{owner.path}.{self._undefined_name}' is missing"
        if owner is missing:
            return f"variable '{self._undefined_name}' is undefined"
        return f"'{self._undefined_name}' is undefined on {type(owner).__name__}"


class _Loader(BaseLoader):
    """Files of the campaign folder plus named inline sources (the subject, the built-in notices)."""

    def __init__(self, folder: Path, inline: Mapping[str, str]) -> None:
        self.folder = folder
        self.inline = dict(inline)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Any]:
        if template in self.inline:
            return self.inline[template], template, lambda: True
        path = (self.folder / template).resolve()
        if not path.is_relative_to(self.folder.resolve()) or not path.is_file():
            raise TemplateNotFound(template)
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        return source, template, lambda: True


def _environment(loader: _Loader, *, html: bool) -> SandboxedEnvironment:
    env = CappedEnvironment(
        loader=loader,
        undefined=_Undefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["datum_lang"] = long_date
    env.filters["datum"] = short_date
    return env


SUBJECT = "campaign.toml [subject]"
UNSUBSCRIBE_URL = "campaign.toml [unsubscribe] url"
PRIVACY_TEXT_NAME = "built-in privacy notice (text)"
PRIVACY_HTML_NAME = "built-in privacy notice (HTML)"
#: The copy line of a letter: the place of the griffie's own copy, for e-mail and PDF alike.
COPY_LINE = "Kopie voor de griffie: deze brief hebben wij op {datum} gestuurd aan {label} van {gemeente}."


@dataclass(frozen=True)
class RenderedLetter:
    subject: str
    text: str  # body with the copy line and the privacy notice, "\n" line ends
    html: str | None
    unsubscribe_url: str | None = None
    is_copy: bool = False  # the griffie's own copy of a letter to others (griffie_copy = "separate")


def _template_position(tb: TracebackType | None, template: Template) -> tuple[str, int | None]:
    """Template name and source line of the innermost template frame of a traceback.

    Frames of compiled template code carry their Template in ``__jinja_template__``, which maps the
    Python line back to the template line (what Template.render's traceback rewriting does, too).
    """
    name, line = template.name or "?", None
    while tb is not None:
        owner = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(owner, Template):
            name, line = owner.name or name, owner.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return name, line


class CampaignTemplates:
    """The campaign's templates, compiled once; ``render`` fills them in for one recipient."""

    def __init__(self, campaign: CampaignConfig) -> None:
        self.campaign = campaign
        inline = {SUBJECT: campaign.subject, PRIVACY_TEXT_NAME: PRIVACY_TEXT, PRIVACY_HTML_NAME: PRIVACY_HTML}
        if campaign.unsubscribe_url:
            inline[UNSUBSCRIBE_URL] = campaign.unsubscribe_url
        loader = _Loader(campaign.folder, inline)
        self._text_env = _environment(loader, html=False)
        self._html_env = _environment(loader, html=True)
        self.subject = self._compile(self._text_env, SUBJECT)
        self.text = self._compile(self._text_env, campaign.text_template)
        self.html = self._compile(self._html_env, campaign.html_template) if campaign.html_template else None
        self.unsubscribe_url = (
            self._compile(self._text_env, UNSUBSCRIBE_URL) if campaign.unsubscribe_url else None
        )
        privacy = campaign.privacy
        self.privacy_text = (
            self._compile(self._text_env, privacy.text or PRIVACY_TEXT_NAME) if privacy.notice else None
        )
        self.privacy_html = (
            self._compile(self._html_env, privacy.html or PRIVACY_HTML_NAME)
            if privacy.notice and self.html is not None
            else None
        )
        letter = campaign.letter
        self.letter = self._compile(self._html_env, letter.template) if letter is not None else None
        self._letter_fields = (
            Fields(
                "letter",
                {
                    "logo": letter.logo,
                    "signature": letter.signature,
                },
            )
            if letter is not None
            else None
        )
        signer = campaign.signer
        self._signer_fields = (
            Fields("signer", {"name": signer.name, "function": signer.function}) if signer else None
        )
        self._globals = dict(self._text_env.globals)
        self._copy_aware: dict[str, bool] = {}
        self._campaign_fields = Fields(
            "campaign",
            {
                "name": campaign.name,
                "slug": campaign.slug,
                "from_name": campaign.from_name,
                "from_address": campaign.from_address,
                "reply_to": campaign.reply_to,
            },
        )

    def _compile(self, env: SandboxedEnvironment, name: str) -> Template:
        try:
            return env.get_template(name)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"campaign {self.campaign.slug}: {name}:{exc.lineno}: {exc.message}",
                hint="fix the template; `outreach check` shows every problem",
            ) from exc
        except TemplateNotFound as exc:
            raise TemplateError(f"campaign {self.campaign.slug}: template {exc.name!r} not found") from exc

    def _fail(
        self, exc: Exception, template: Template, recipient: Recipient, cause: BaseException | None = None
    ) -> NoReturn:
        name, line = _template_position((cause or exc).__traceback__, template)
        where = f"{name}:{line}" if line else name
        if isinstance(exc, TemplateNotFound):
            detail = f"template {exc.name!r} not found in the campaign folder"
        elif isinstance(exc, JinjaTemplateError) and exc.message:
            detail = exc.message
        else:
            detail = str(exc)
        raise TemplateError(
            f"campaign {self.campaign.slug}: {recipient.label}: {where}: {detail}",
        ) from (cause or exc)

    def _render(self, template: Template, context: dict[str, Any], recipient: Recipient) -> str:
        try:
            # Template.render() copies the context and merges the globals for every call; the context
            # here already holds them (see context()), so it is handed over as is, five times per letter.
            with limits.budget():
                return limits.render_capped(
                    template.root_render_func(template.new_context(context, shared=True))
                )
        except (JinjaTemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            self._fail(exc, template, recipient)
        except RecursionError as exc:
            # A macro that calls itself without end runs out of stack long before the step budget.
            self._fail(TemplateRuntimeError("a macro calls itself without end"), template, recipient, exc)

    def context(
        self, recipient: Recipient, *, token: str, now: datetime, kenmerk: str = ""
    ) -> dict[str, Any]:
        campaign = self.campaign
        copy = (
            campaign.griffie_copy == "separate"
            and recipient.role == Role.GRIFFIE
            and Role.GRIFFIE not in campaign.audience.roles
        )
        griffie = (
            Fields("griffie", {"email": recipient.griffie_email, "name": f"Griffie {recipient.municipality}"})
            if recipient.griffie_email and campaign.griffie_copy != "none"
            else None
        )
        mailto_address = campaign.unsubscribe_mailto
        mailto = f"mailto:{mailto_address}?subject=afmelden%20{token}" if mailto_address else None
        context: dict[str, Any] = self._globals | {
            "contact": Fields(
                "contact",
                {
                    "email": recipient.email,
                    "role": recipient.role,
                    "naam": recipient.name,
                    "voornaam": recipient.voornaam,
                    "voorletters": recipient.voorletters,
                    "tussenvoegsel": recipient.tussenvoegsel,
                    "achternaam": recipient.achternaam,
                    "title": recipient.title,
                    "aanspreekvorm": aanspreekvorm(recipient.aanspreekvorm),
                    "party": recipient.party,
                    "portfolio": recipient.portfolio,
                },
            ),
            "municipality": Fields(
                "municipality",
                {
                    "name": recipient.municipality,
                    "cbs_code": recipient.cbs_code,
                    "province": recipient.province,
                },
            ),
            "campaign": self._campaign_fields,
            "aanhef": aanhef(
                recipient.role,
                aanspreekvorm_raw=recipient.aanspreekvorm,
                tussenvoegsel=recipient.tussenvoegsel,
                achternaam=recipient.achternaam,
                style=campaign.salutation,
            ),
            "datum": long_date(now),
            # Dutch letter style: "Utrecht, 1 december 2026" (the date alone without a place).
            "plaats_datum": f"{campaign.place}, {short_date(now)}" if campaign.place else short_date(now),
            "kenmerk": kenmerk,
            "signer": self._signer_fields,
            "letter": self._letter_fields,
            "adres": address_lines(
                role=recipient.role,
                aanspreekvorm_raw=recipient.aanspreekvorm,
                voornaam=recipient.voornaam,
                voorletters=recipient.voorletters,
                tussenvoegsel=recipient.tussenvoegsel,
                achternaam=recipient.achternaam,
                municipality=recipient.municipality,
                postal=recipient.postal,
            ),
            "now": now,
            "token": token,
            "griffie_copy": campaign.griffie_copy,
            "griffie": griffie,
            "copy": copy,
            "copy_of": campaign.griffie_copy_label,
            "unsubscribe_mailto": mailto,
            "unsubscribe_address": mailto_address,
            "unsubscribe_url": None,
            "privacy": Fields(
                "privacy",
                {
                    "why": why_phrase(recipient.role, recipient.municipality),
                    "address_source": campaign.privacy.address_source,
                },
            ),
        }
        if campaign.web_base_url:
            context["optin_url"] = f"{campaign.web_base_url}/aanmelden/{token}"
        if self.unsubscribe_url is not None:
            context["unsubscribe_url"] = self._render(self.unsubscribe_url, context, recipient).strip()
        return context

    def _words_copy(self, template: Template) -> bool:
        """Whether ``template`` uses the variable ``copy`` (so it has its own wording for the copy)."""
        name = template.name or ""
        if name not in self._copy_aware:
            env = self._html_env if template.environment is self._html_env else self._text_env
            source = env.loader.get_source(env, name)[0] if env.loader is not None else ""
            self._copy_aware[name] = "copy" in meta.find_undeclared_variables(env.parse(source))
        return self._copy_aware[name]

    def copy_line(self, recipient: Recipient, now: datetime) -> str:
        return COPY_LINE.format(
            datum=long_date(now),
            label=campaign_label(self.campaign),
            gemeente=recipient.municipality or "uw gemeente",
        )

    def render_letter(self, recipient: Recipient, *, token: str, now: datetime, kenmerk: str) -> str:
        """The HTML of the campaign's formal letter (``[letter] template``) for ``recipient``."""
        if self.letter is None:
            raise TemplateError(f"campaign {self.campaign.slug} has no [letter] template")
        context = self.context(recipient, token=token, now=now, kenmerk=kenmerk)
        return self._render(self.letter, context, recipient)

    def render(self, recipient: Recipient, *, token: str, now: datetime, kenmerk: str = "") -> RenderedLetter:
        context = self.context(recipient, token=token, now=now, kenmerk=kenmerk)
        subject = self._render(self.subject, context, recipient).strip(" ")
        text = self._render(self.text, context, recipient)
        html = self._render(self.html, context, recipient) if self.html is not None else None
        if context["copy"]:
            line = self.copy_line(recipient, now)
            subject = f"Kopie: {subject}"
            # A template that says {% if copy %} words the copy itself: no second, automatic line.
            if not self._words_copy(self.text):
                text = f"{line}\n\n{text}"
            if html is not None and self.html is not None and not self._words_copy(self.html):
                html = _insert_after_body(
                    html, f'<p class="kopie"><em>{escape(line, quote=False)}</em></p>\n'
                )
        if self.privacy_text is not None:
            text = f"{text.rstrip()}\n\n-- \n{self._render(self.privacy_text, context, recipient)}"
        if html is not None and self.privacy_html is not None:
            html = _insert_before_body_end(html, self._render(self.privacy_html, context, recipient))
        return RenderedLetter(
            subject=subject,
            text=text,
            html=html,
            unsubscribe_url=context["unsubscribe_url"],
            is_copy=context["copy"],
        )


def campaign_label(campaign: CampaignConfig) -> str:
    return campaign.griffie_copy_label or "de geadresseerden"


_BODY_OPEN = re.compile(r"<body[^>]*>", re.IGNORECASE)
_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)


def _insert_after_body(html: str, fragment: str) -> str:
    match = _BODY_OPEN.search(html)
    if match is None:
        return fragment + html
    return html[: match.end()] + "\n" + fragment + html[match.end() :]


def _insert_before_body_end(html: str, fragment: str) -> str:
    matches = list(_BODY_CLOSE.finditer(html))
    if not matches:
        return html.rstrip() + "\n" + fragment
    cut = matches[-1].start()
    return html[:cut] + fragment + html[cut:]
