from __future__ import annotations

from pathlib import Path

import pytest

from outreach.config import load_settings
from outreach.errors import ConfigError


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.database_url == "sqlite:///outreach.db"
    assert settings.smtp_tls == "starttls"
    assert settings.smtp_port_effective == 587
    assert settings.imap_port_effective == 993


def test_flag_beats_env_beats_toml(tmp_path: Path) -> None:
    (tmp_path / "outreach.toml").write_text(
        '[database]\nurl = "sqlite:///toml.db"\n[smtp]\nhost = "toml-host"\nport = 2525\ntls = "none"\n',
        encoding="utf-8",
    )
    env = {"OUTREACH_SMTP_HOST": "env-host", "OUTREACH_DATABASE_URL": "sqlite:///env.db"}
    settings = load_settings({"database_url": "sqlite:///flag.db"}, environ=env, cwd=tmp_path)
    assert settings.database_url == "sqlite:///flag.db"
    assert settings.smtp_host == "env-host"
    assert settings.smtp_port == 2525
    assert settings.smtp_tls == "none"


def test_password_is_not_in_repr(tmp_path: Path) -> None:
    settings = load_settings(environ={"OUTREACH_SMTP_PASSWORD": "hunter2"}, cwd=tmp_path)
    assert settings.smtp_password == "hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OUTREACH_SMTP_PORT": "seventy"}, "OUTREACH_SMTP_PORT: 'seventy' is not a port number"),
        ({"OUTREACH_SMTP_TLS": "ssl"}, "OUTREACH_SMTP_TLS: 'ssl' is not one of starttls, tls, none"),
    ],
)
def test_bad_values_name_their_source(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ=env, cwd=tmp_path)


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "outreach.toml").write_text("[smtp\nhost=", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"outreach\.toml: not valid TOML"):
        load_settings(environ={}, cwd=tmp_path)
