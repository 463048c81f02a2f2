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


# ---- issue 11, item 17: as strict as campaign.toml ---------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "message", "hint"),
    [
        ('[smtp]\nhots = "smtp.example.org"\n', "[smtp] hots: unknown key", "did you mean 'host'?"),
        ('[smpt]\nhost = "smtp.example.org"\n', "[smpt]: unknown section", "did you mean [smtp]?"),
        ('[imap]\nfolder = "INBOX"\n', "[imap] folder: unknown key", "did you mean 'folders'?"),
        ('url = "sqlite:///x.db"\n', "url: a setting outside any section", "did you mean [database] url?"),
        ('[database]\nurl = "sqlite:///x.db"\nechoo = true\n', "[database] echoo: unknown key", None),
    ],
)
def test_unknown_keys_are_an_error_naming_key_and_file(
    tmp_path: Path, toml: str, message: str, hint: str | None
) -> None:
    (tmp_path / "outreach.toml").write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, cwd=tmp_path)
    assert caught.value.message == f"{tmp_path / 'outreach.toml'}: {message}"
    if hint is not None:
        assert caught.value.hint is not None and caught.value.hint.startswith(hint)


@pytest.mark.parametrize("section", ["smtp", "imap"])
def test_a_password_in_outreach_toml_is_refused(tmp_path: Path, section: str) -> None:
    (tmp_path / "outreach.toml").write_text(
        f'[{section}]\nhost = "mail.example.org"\nusername = "brieven"\npassword = "hunter2"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        # Even with the password also in the environment: the file must not hold it.
        load_settings(environ={f"OUTREACH_{section.upper()}_PASSWORD": "hunter2"}, cwd=tmp_path)
    assert caught.value.message == (
        f"{tmp_path / 'outreach.toml'}: [{section}] password: passwords do not belong in outreach.toml"
    )
    assert caught.value.hint == (
        f"remove it from the file and set OUTREACH_{section.upper()}_PASSWORD in the environment"
    )
    assert "hunter2" not in str(caught.value) + str(caught.value.hint)


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from outreach.cli import app

    (tmp_path / "outreach.toml").write_text('[smtp]\nhots = "x"\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["contacts", "list"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: {Path.cwd() / 'outreach.toml'}: [smtp] hots: unknown key",
        "Hint: did you mean 'host'? Known keys of [smtp]: host, port, username, tls, timeout, ca_file",
    ]
