"""Reading a campaign folder: ``campaign.toml`` parsed and validated into a ``CampaignConfig``.

Loading validates everything that can be validated without a database (keys, roles, addresses, template
and attachment files, the sending window) and names the file and key on error, so that ``outreach
check`` and ``outreach send`` fail before any letter is rendered.
"""

from __future__ import annotations

import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Any, cast

from outreach.errors import CampaignError, NotFoundError
from outreach.letters.campaign import (
    CAMPAIGN_FILE,
    MAX_APPROVALS,
    Audience,
    CampaignConfig,
    GriffieCopy,
    LetterConfig,
    PrivacyConfig,
    Salutation,
    SendingConfig,
    SendingWindow,
    Signer,
)
from outreach.models import Role

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_ADDRESS_RE = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$", re.IGNORECASE)
_LOCAL_RE = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
_KENMERK_PREFIX_RE = re.compile(r"^[A-Z]{2,8}$")

# Monday is 0, as datetime.weekday(). Dutch and English names, full and abbreviated.
_DAYS: dict[str, int] = {}
for _index, _names in enumerate(
    (
        ("ma", "maandag", "mon", "monday"),
        ("di", "dinsdag", "tue", "tuesday"),
        ("wo", "woensdag", "wed", "wednesday"),
        ("do", "donderdag", "thu", "thursday"),
        ("vr", "vrijdag", "fri", "friday"),
        ("za", "zaterdag", "sat", "saturday"),
        ("zo", "zondag", "sun", "sunday"),
    )
):
    for _name in _names:
        _DAYS[_name] = _index

_TOP_KEYS = {
    "name",
    "approvals",
    "subject",
    "text",
    "html",
    "attachments",
    "griffie_copy",
    "griffie_copy_label",
    "salutation",
    "signature",
    "from",
    "audience",
    "unsubscribe",
    "privacy",
    "sending",
    "signer",
    "letter",
    "kenmerk_prefix",
}
_SECTION_KEYS: dict[str, set[str]] = {
    "from": {"name", "address", "reply_to", "message_domain", "place"},
    "signer": {"name", "function"},
    "letter": {"template", "stylesheet", "logo", "signature"},
    "audience": {"roles", "provinces", "municipalities", "parties", "portfolio"},
    "unsubscribe": {"mailto", "url"},
    "privacy": {"notice", "address_source", "text", "html"},
    "sending": {
        "rate",
        "domain_rate",
        "domain_connections",
        "max_per_connection",
        "window",
        "verp_local",
        "dkim_selector",
        "dkim_domain",
        "dkim_key_file",
        "mx_groups",
        "group_connections",
        "group_rate",
    },
    "sending.window": {"days", "start", "end"},
}

_COPY_LABELS: dict[str, str] = {
    Role.RAADSLID: "de raadsleden",
    Role.WETHOUDER: "de wethouders",
    Role.BURGEMEESTER: "de burgemeester",
    Role.LOCO_BURGEMEESTER: "de loco-burgemeester",
    Role.GRIFFIER: "de griffier",
    Role.BURGERRAADSLID: "de burgerraadsleden",
    Role.COMMISSIELID: "de commissieleden",
    Role.FRACTIEASSISTENT: "de fractieassistenten",
    Role.SECRETARIS: "de gemeentesecretaris",
    Role.SUPPORTER: "onze achterban",
}


class _Reader:
    """Typed access to one table of campaign.toml with errors naming file and key."""

    def __init__(self, path: Path, table: dict[str, Any], prefix: str) -> None:
        self.path = path
        self.table = table
        self.prefix = prefix

    def where(self, key: str) -> str:
        return f"{self.path}: {self.prefix}{key}"

    def fail(self, key: str, problem: str) -> CampaignError:
        return CampaignError(f"{self.where(key)}: {problem}")

    def check_keys(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (expected one of {', '.join(sorted(allowed))})")

    def section(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return _Reader(self.path, value, f"{self.prefix}{key}.")

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required")
            return default
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {type(value).__name__}")
        value = value.strip()
        if required and not value:
            raise self.fail(key, "must not be empty")
        return value or default

    def required_text(self, key: str) -> str:
        value = self.text(key, required=True)
        assert value is not None
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a list of strings")
        return tuple(v.strip() for v in cast(list[str], value) if v.strip())

    def number(self, key: str, *, integer: bool = False) -> float | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(key, f"must be a positive {'whole ' if integer else ''}number, not {value!r}")
        if integer and not isinstance(value, int):
            raise self.fail(key, f"must be a whole number, not {value!r}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value


def _no_control(reader: _Reader, key: str, value: str | None) -> None:
    if value is not None and any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise reader.fail(key, "contains a control character (line break, tab, ...)")


def _address(reader: _Reader, key: str, value: str | None) -> None:
    if value is not None and not _ADDRESS_RE.match(value):
        raise reader.fail(key, f"{value!r} is not an e-mail address")


def _parse_time(reader: _Reader, key: str) -> time:
    raw = reader.table.get(key)
    if isinstance(raw, time):
        return raw
    if isinstance(raw, str):
        try:
            return time.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise reader.fail(key, f'{raw!r} is not a time like "08:30"')


def _parse_window(sending: _Reader) -> SendingWindow | None:
    if "window" not in sending.table:
        return None
    reader = sending.section("window")
    reader.check_keys(_SECTION_KEYS["sending.window"])
    days: set[int] = set()
    for item in reader.strings("days") or ("ma", "di", "wo", "do", "vr"):
        bounds = item.lower().split("-")
        if len(bounds) > 2 or any(b.strip() not in _DAYS for b in bounds):
            raise reader.fail("days", f"{item!r} is not a day (ma, di, ... zo) or range (ma-vr)")
        first, last = _DAYS[bounds[0].strip()], _DAYS[bounds[-1].strip()]
        day = first
        days.add(day)
        while day != last:
            day = (day + 1) % 7
            days.add(day)
    start = _parse_time(reader, "start") if "start" in reader.table else time(0, 0)
    end = _parse_time(reader, "end") if "end" in reader.table else time(23, 59, 59, 999999)
    if end <= start:
        raise reader.fail("end", f"{end:%H:%M} must be later than start {start:%H:%M}")
    return SendingWindow(days=frozenset(days), start=start, end=end)


def _parse_sending(root: _Reader, folder: Path) -> SendingConfig:
    reader = root.section("sending")
    reader.check_keys(_SECTION_KEYS["sending"])
    verp_local = reader.text("verp_local")
    if verp_local is not None and not _LOCAL_RE.match(verp_local):
        raise reader.fail("verp_local", f'{verp_local!r} is not a simple local part like "bounces"')
    dkim_domain = reader.text("dkim_domain")
    if dkim_domain is not None and not _DOMAIN_RE.match(dkim_domain):
        raise reader.fail("dkim_domain", f"{dkim_domain!r} is not a domain name")
    key_file = reader.text("dkim_key_file")
    selector = reader.text("dkim_selector")
    if bool(key_file) != bool(selector):
        missing = "dkim_key_file" if selector else "dkim_selector"
        raise reader.fail(
            missing, "is required when signing with DKIM (dkim_selector and dkim_key_file go together)"
        )
    connections = reader.number("domain_connections", integer=True)
    per_connection = reader.number("max_per_connection", integer=True)
    group_connections = reader.number("group_connections", integer=True)
    return SendingConfig(
        rate=reader.number("rate"),
        domain_rate=reader.number("domain_rate"),
        domain_connections=int(connections) if connections is not None else 2,
        max_per_connection=int(per_connection) if per_connection is not None else 100,
        window=_parse_window(reader),
        verp_local=verp_local,
        dkim_selector=selector,
        dkim_domain=dkim_domain,
        dkim_key_file=(folder / key_file) if key_file else None,
        mx_groups=reader.boolean("mx_groups", True),
        group_connections=int(group_connections) if group_connections is not None else 20,
        group_rate=reader.number("group_rate"),
    )


def _template_file(reader: _Reader, key: str, folder: Path, *, required: bool) -> str | None:
    name = reader.text(key, required=required)
    if name is None:
        return None
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise reader.fail(key, f"{name!r} lies outside the campaign folder")
    if not path.is_file():
        raise reader.fail(key, f"template {name!r} not found in {folder}")
    return name


def _parse_letter(root: _Reader, folder: Path) -> LetterConfig | None:
    if "letter" not in root.table:
        return None
    reader = root.section("letter")
    reader.check_keys(_SECTION_KEYS["letter"])
    template = _template_file(reader, "template", folder, required=True)
    assert template is not None
    return LetterConfig(
        template=template,
        stylesheet=_template_file(reader, "stylesheet", folder, required=False),
        logo=_template_file(reader, "logo", folder, required=False),
        signature=_template_file(reader, "signature", folder, required=False),
    )


def _parse_signer(root: _Reader) -> Signer | None:
    if "signer" not in root.table:
        return None
    reader = root.section("signer")
    reader.check_keys(_SECTION_KEYS["signer"])
    name = reader.required_text("name")
    function = reader.text("function", "") or ""
    _no_control(reader, "name", name)
    _no_control(reader, "function", function)
    return Signer(name=name, function=function)


def _default_kenmerk_prefix(from_name: str) -> str:
    """The initials of the sender: "Het Vergeten Kind" -> "HVK"."""
    initials = "".join(word[0] for word in re.findall(r"[A-Za-z]+", from_name)).upper()
    return initials[:8] if len(initials) >= 2 else "BRIEF"


def _parse_audience(root: _Reader) -> Audience:
    reader = root.section("audience")
    reader.check_keys(_SECTION_KEYS["audience"])
    roles = tuple(r.lower() for r in reader.strings("roles"))
    if not roles:
        raise reader.fail("roles", 'is required: which roles receive this letter (e.g. ["raadslid"])')
    known = {r.value for r in Role}
    for role in roles:
        if role not in known:
            raise reader.fail("roles", f"unknown role {role!r} (known: {', '.join(sorted(known))})")
    return Audience(
        roles=roles,
        provinces=reader.strings("provinces"),
        municipalities=reader.strings("municipalities"),
        parties=reader.strings("parties"),
        portfolio=tuple(p.lower() for p in reader.strings("portfolio")),
    )


def _join_dutch(items: list[str]) -> str:
    """ "a", "a en b", "a, b en c"."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} en {items[-1]}"


def parse_campaign(folder: Path, slug: str, data: dict[str, Any]) -> CampaignConfig:
    """A CampaignConfig from the parsed TOML of ``folder/campaign.toml``."""
    root = _Reader(folder / CAMPAIGN_FILE, data, "")
    root.check_keys(_TOP_KEYS)
    for name in _SECTION_KEYS:
        if "." not in name:
            root.section(name)  # type-checks the table early

    sender = root.section("from")
    sender.check_keys(_SECTION_KEYS["from"])
    from_name = sender.required_text("name")
    from_address = sender.required_text("address")
    reply_to = sender.text("reply_to", from_address) or from_address
    for key, value in (("name", from_name), ("address", from_address), ("reply_to", reply_to)):
        _no_control(sender, key, value)
    _address(sender, "address", from_address)
    _address(sender, "reply_to", reply_to)
    place = sender.text("place", "") or ""
    _no_control(sender, "place", place)
    message_domain = sender.text("message_domain") or from_address.rsplit("@", 1)[1]
    if not _DOMAIN_RE.match(message_domain):
        raise sender.fail("message_domain", f"{message_domain!r} is not a domain name")

    griffie_copy = root.text("griffie_copy", "none") or "none"
    if griffie_copy not in ("none", "cc", "separate"):
        raise root.fail("griffie_copy", f"{griffie_copy!r} is not one of none, cc, separate")
    salutation = root.text("salutation", "formal") or "formal"
    if salutation not in ("formal", "informal"):
        raise root.fail("salutation", f"{salutation!r} is not one of formal, informal")

    audience = _parse_audience(root)
    if griffie_copy != "none" and Role.GRIFFIE in audience.roles:
        raise root.fail("griffie_copy", 'the griffie is already in the audience; use griffie_copy = "none"')
    label = root.text("griffie_copy_label") or _join_dutch([_COPY_LABELS.get(r, r) for r in audience.roles])

    attachments: list[Path] = []
    for name in root.strings("attachments"):
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise root.fail("attachments", f"{name!r} lies outside the campaign folder")
        if not path.is_file():
            raise root.fail("attachments", f"attachment {name!r} not found in {folder}")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in path.name):
            raise root.fail("attachments", f"file name {name!r} contains a control character")
        attachments.append(path)

    unsubscribe = root.section("unsubscribe")
    unsubscribe.check_keys(_SECTION_KEYS["unsubscribe"])
    mailto = unsubscribe.text("mailto")
    if mailto is not None:
        mailto = mailto.removeprefix("mailto:")
        _address(unsubscribe, "mailto", mailto)
    url = unsubscribe.text("url")
    if url is not None and not url.startswith("https://"):
        raise unsubscribe.fail("url", "must start with https:// (RFC 8058 one-click unsubscribe)")
    _no_control(unsubscribe, "url", url)

    privacy_reader = root.section("privacy")
    privacy_reader.check_keys(_SECTION_KEYS["privacy"])
    default_privacy = PrivacyConfig()
    privacy = PrivacyConfig(
        notice=privacy_reader.boolean("notice", True),
        address_source=privacy_reader.text("address_source", default_privacy.address_source)
        or default_privacy.address_source,
        text=_template_file(privacy_reader, "text", folder, required=False),
        html=_template_file(privacy_reader, "html", folder, required=False),
    )

    subject = root.required_text("subject")
    approvals = root.number("approvals", integer=True) or 1
    if approvals > MAX_APPROVALS:
        raise root.fail("approvals", f"at most {MAX_APPROVALS} people can be required to approve")
    kenmerk_prefix = root.text("kenmerk_prefix") or _default_kenmerk_prefix(from_name)
    if not _KENMERK_PREFIX_RE.match(kenmerk_prefix):
        raise root.fail("kenmerk_prefix", f'{kenmerk_prefix!r} must be 2 to 8 capital letters, like "HVK"')
    signer = _parse_signer(root)
    letter = _parse_letter(root, folder)
    if letter is not None and signer is None:
        raise root.fail(
            "signer", "is required with [letter]: a formal letter says who signs it (name, function)"
        )
    signature = root.text("signature", "") or ""
    if not signature and signer is not None:
        signature = f"{signer.name}, {signer.function}" if signer.function else signer.name
    return CampaignConfig(
        slug=slug,
        name=root.required_text("name"),
        folder=folder,
        from_name=from_name,
        from_address=from_address,
        reply_to=reply_to,
        message_domain=message_domain.lower(),
        audience=audience,
        griffie_copy=cast(GriffieCopy, griffie_copy),
        sending=_parse_sending(root, folder),
        subject=subject,
        text_template=cast(str, _template_file(root, "text", folder, required=True)),
        html_template=_template_file(root, "html", folder, required=False),
        attachments=tuple(attachments),
        unsubscribe_mailto=mailto,
        unsubscribe_url=url,
        privacy=privacy,
        salutation=cast(Salutation, salutation),
        griffie_copy_label=label,
        approvals=int(approvals),
        signature=signature,
        signer=signer,
        letter=letter,
        place=place,
        kenmerk_prefix=kenmerk_prefix,
    )


def campaign_folder(templates_dir: Path, slug: str) -> Path:
    if not _SLUG_RE.match(slug):
        raise NotFoundError(f"{slug!r} is not a campaign name (lowercase letters, digits, '.', '_', '-')")
    folder = templates_dir / slug
    if not (folder / CAMPAIGN_FILE).is_file():
        known = ", ".join(list_campaign_slugs(templates_dir)) or "none"
        raise NotFoundError(
            f"campaign {slug!r}: no {CAMPAIGN_FILE} in {folder}",
            hint=f"campaigns in {templates_dir}: {known}",
        )
    return folder


def load_campaign(templates_dir: Path, slug: str) -> CampaignConfig:
    """The campaign in ``templates_dir/slug``, validated; raises CampaignError naming file and key."""
    folder = campaign_folder(templates_dir, slug)
    path = folder / CAMPAIGN_FILE
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}") from exc
    return parse_campaign(folder, slug, data)


def list_campaign_slugs(templates_dir: Path) -> list[str]:
    """Slugs of the folders under ``templates_dir`` that hold a campaign.toml, sorted."""
    if not templates_dir.is_dir():
        return []
    return sorted(
        p.name for p in templates_dir.iterdir() if (p / CAMPAIGN_FILE).is_file() and _SLUG_RE.match(p.name)
    )
