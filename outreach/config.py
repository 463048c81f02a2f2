"""Settings: command-line flags, then ``OUTREACH_*`` environment variables, then ``outreach.toml``.

``outreach.toml`` lives in the working directory and uses sections::

    [database]
    url = "sqlite:///outreach.db"

    [smtp]
    host = "smtp.example.org"
    port = 587
    username = "brieven@example.org"
    tls = "starttls"          # starttls (default) | tls | none

    [imap]
    host = "imap.example.org"

    [web]
    base_url = "https://post.example.org"   # `outreach serve` behind the reverse proxy
    trusted_proxies = ["127.0.0.1"]         # whose X-Forwarded-For is believed

The file is read as strictly as campaign.toml: an unknown section or key is an error that names it and
suggests the nearest known one (a typo such as ``hots`` would otherwise silently fall back to the
default). Passwords belong in ``OUTREACH_SMTP_PASSWORD`` / ``OUTREACH_IMAP_PASSWORD``: a password in
``outreach.toml`` is refused, because the file sits in a working directory that is copied, shared and
committed; the tool itself never writes, logs or stores one.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from outreach.errors import ConfigError

CONFIG_FILE = "outreach.toml"
TlsMode = Literal["starttls", "tls", "none"]
TLS_MODES: tuple[str, ...] = ("starttls", "tls", "none")
_BASE_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///outreach.db"
    templates: Path = Path("templates/letters")
    smtp_host: str = "localhost"
    smtp_port: int | None = None  # None: 587 for starttls, 465 for tls, 25 for none
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_tls: TlsMode = "starttls"
    smtp_timeout: float = 30.0
    smtp_ca_file: Path | None = None
    imap_host: str | None = None
    imap_port: int | None = None  # None: 993 for tls, 143 otherwise
    imap_username: str | None = None
    imap_password: str | None = field(default=None, repr=False)
    imap_tls: TlsMode = "tls"
    imap_ca_file: Path | None = None
    imap_folders: tuple[str, ...] = ("INBOX",)
    # `outreach serve`: the public https address behind the reverse proxy (no trailing slash); campaigns'
    # unsubscribe and opt-in links default to it.
    web_base_url: str | None = None
    web_trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For is believed
    web_rate_limit: float = 60.0  # requests per minute per client address on the public pages

    @property
    def smtp_port_effective(self) -> int:
        if self.smtp_port is not None:
            return self.smtp_port
        return {"starttls": 587, "tls": 465, "none": 25}[self.smtp_tls]

    @property
    def imap_port_effective(self) -> int:
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_tls == "tls" else 143


# setting name -> (environment variable, (toml section, toml key))
_SOURCES: dict[str, tuple[str, tuple[str, str]]] = {
    "database_url": ("OUTREACH_DATABASE_URL", ("database", "url")),
    "templates": ("OUTREACH_TEMPLATES", ("paths", "templates")),
    "smtp_host": ("OUTREACH_SMTP_HOST", ("smtp", "host")),
    "smtp_port": ("OUTREACH_SMTP_PORT", ("smtp", "port")),
    "smtp_username": ("OUTREACH_SMTP_USERNAME", ("smtp", "username")),
    "smtp_password": ("OUTREACH_SMTP_PASSWORD", ("smtp", "password")),
    "smtp_tls": ("OUTREACH_SMTP_TLS", ("smtp", "tls")),
    "smtp_timeout": ("OUTREACH_SMTP_TIMEOUT", ("smtp", "timeout")),
    "smtp_ca_file": ("OUTREACH_SMTP_CA_FILE", ("smtp", "ca_file")),
    "imap_host": ("OUTREACH_IMAP_HOST", ("imap", "host")),
    "imap_port": ("OUTREACH_IMAP_PORT", ("imap", "port")),
    "imap_username": ("OUTREACH_IMAP_USERNAME", ("imap", "username")),
    "imap_password": ("OUTREACH_IMAP_PASSWORD", ("imap", "password")),
    "imap_tls": ("OUTREACH_IMAP_TLS", ("imap", "tls")),
    "imap_ca_file": ("OUTREACH_IMAP_CA_FILE", ("imap", "ca_file")),
    "imap_folders": ("OUTREACH_IMAP_FOLDERS", ("imap", "folders")),
    "web_base_url": ("OUTREACH_WEB_BASE_URL", ("web", "base_url")),
    "web_trusted_proxies": ("OUTREACH_WEB_TRUSTED_PROXIES", ("web", "trusted_proxies")),
    "web_rate_limit": ("OUTREACH_WEB_RATE_LIMIT", ("web", "rate_limit")),
}


# Keys of outreach.toml that only the environment may set.
_SECRET_KEYS = {
    ("smtp", "password"): "OUTREACH_SMTP_PASSWORD",
    ("imap", "password"): "OUTREACH_IMAP_PASSWORD",
}
_SECRET_NAMES = ("password", "passwd", "secret", "token", "passphrase")


def _known_keys() -> dict[str, list[str]]:
    known: dict[str, list[str]] = {}
    for _env, (section, key) in _SOURCES.values():
        if (section, key) not in _SECRET_KEYS:
            known.setdefault(section, []).append(key)
    return known


def _check_keys(data: dict[str, Any], path: Path) -> None:
    """Every section and key of outreach.toml must be one outreach reads; no password in the file."""
    known = _known_keys()
    for section, table in data.items():
        if not isinstance(table, dict):
            owners = [s for s, keys in known.items() if section in keys]
            raise ConfigError(
                f"{path}: {section}: a setting outside any section",
                hint=f"did you mean [{owners[0]}] {section}?" if owners else f"sections: {', '.join(known)}",
            )
        if section not in known:
            close = difflib.get_close_matches(section, list(known), n=1)
            listed = ", ".join(f"[{name}]" for name in known)
            raise ConfigError(
                f"{path}: [{section}]: unknown section",
                hint=(f"did you mean [{close[0]}]? " if close else "") + f"Known sections: {listed}",
            )
        for key in table:
            secret = _SECRET_KEYS.get((section, key))
            if secret is not None or any(name in key.lower() for name in _SECRET_NAMES):
                where = f"{path}: [{section}] {key}"
                raise ConfigError(
                    f"{where}: passwords do not belong in outreach.toml",
                    hint=f"remove it from the file and set {secret or 'it'} in the environment",
                )
            if key not in known[section]:
                close = difflib.get_close_matches(key, known[section], n=1, cutoff=0.5)
                listed = ", ".join(known[section])
                raise ConfigError(
                    f"{path}: [{section}] {key}: unknown key",
                    hint=(f"did you mean {close[0]!r}? " if close else "")
                    + f"Known keys of [{section}]: {listed}",
                )


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    _check_keys(data, path)
    return data


def _convert(name: str, raw: object, where: str) -> object:
    """Turn a raw env/toml value into the type the setting has; errors name the source."""
    try:
        if name in ("smtp_port", "imap_port"):
            port = int(cast(Any, raw))
            if not 0 < port < 65536:
                raise ValueError
            return port
        if name == "smtp_timeout":
            value = float(cast(Any, raw))
            if value <= 0:
                raise ValueError
            return value
        if name in ("smtp_tls", "imap_tls"):
            text = str(raw).strip().lower()
            if text not in TLS_MODES:
                raise ValueError
            return text
        if name in ("templates", "smtp_ca_file", "imap_ca_file"):
            return Path(str(raw)).expanduser()
        if name == "web_base_url":
            url = str(raw).strip().rstrip("/")
            if not _BASE_URL_RE.match(url):
                raise ValueError
            return url
        if name == "web_trusted_proxies":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            proxies = tuple(str(item).strip() for item in items if str(item).strip())
            for proxy in proxies:
                ipaddress.ip_network(proxy, strict=False)
            return proxies
        if name == "web_rate_limit":
            rate = float(cast(Any, raw))
            if not rate > 0:
                raise ValueError
            return rate
        if name == "imap_folders":
            items = raw if isinstance(raw, list) else str(raw).split(",")
            folders = tuple(str(item).strip() for item in items if str(item).strip())
            if not folders:
                raise ValueError
            return folders
    except (TypeError, ValueError):
        expected = {
            "smtp_port": "a port number 1-65535",
            "imap_port": "a port number 1-65535",
            "smtp_timeout": "a positive number of seconds",
            "smtp_tls": "one of starttls, tls, none",
            "imap_tls": "one of starttls, tls, none",
            "imap_folders": "a comma-separated list of folder names",
            "web_base_url": "an http(s) address like https://post.example.nl (no query, no fragment)",
            "web_trusted_proxies": "a comma-separated list of IP addresses or networks",
            "web_rate_limit": "a positive number of requests per minute",
        }.get(name, "a valid value")
        raise ConfigError(f"{where}: {raw!r} is not {expected}") from None
    return str(raw)


def load_settings(
    overrides: Mapping[str, object | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Settings from flags (``overrides``; None means 'not given'), env, then ``outreach.toml``."""
    env = os.environ if environ is None else environ
    toml_path = (cwd or Path.cwd()) / CONFIG_FILE
    data = _read_toml(toml_path)
    values: dict[str, object] = {}
    for name, (env_name, (section, key)) in _SOURCES.items():
        given = (overrides or {}).get(name)
        if given is not None:
            values[name] = _convert(name, given, f"--{name.replace('_', '-')}")
        elif env.get(env_name, "") != "":
            values[name] = _convert(name, env[env_name], env_name)
        else:
            table = data.get(section, {})
            if isinstance(table, dict) and key in table:
                values[name] = _convert(name, table[key], f"{toml_path}: [{section}] {key}")
    unknown = set(overrides or {}) - set(_SOURCES)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(Settings(), **cast(Any, values))
