"""Fixtures for the letters tests: a registry with municipalities, and campaign folders to write."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from tests.factories import load_reference

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates" / "letters"
# A Monday morning in winter (CET, UTC+1): 26 January 2026, 09:00 UTC is 10:00 in Amsterdam.
NOW = datetime(2026, 1, 26, 9, 0, 0)

MINIMAL_TOML = """\
name = "Testbrief"
subject = "Brief voor {{ municipality.name }}"
text = "brief.txt.j2"

[from]
name = "Het Vergeten Kind"
address = "brieven@hetvergetenkind.nl"

[audience]
roles = ["raadslid"]
"""
MINIMAL_TEXT = "{{ aanhef }},\n\nDit is een brief aan {{ municipality.name }}.\n"

CampaignWriter = Callable[..., CampaignConfig]


@pytest.fixture
def registry(engine: Engine) -> Engine:
    """The test database with the 342 municipalities loaded."""
    load_reference(engine)
    return engine


@pytest.fixture
def write_campaign(tmp_path: Path) -> CampaignWriter:
    """Write a campaign folder under tmp_path/templates and load it.

    ``write_campaign(slug="x", toml=..., files={"brief.txt.j2": "..."})``; defaults give a minimal valid
    campaign. Pass ``load=False`` semantics by catching the error in the test instead.
    """
    root = tmp_path / "templates"

    def write(
        slug: str = "test",
        *,
        toml: str = MINIMAL_TOML,
        files: dict[str, str | bytes] | None = None,
    ) -> CampaignConfig:
        folder = root / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "campaign.toml").write_text(toml, encoding="utf-8")
        for name, content in ({"brief.txt.j2": MINIMAL_TEXT} | (files or {})).items():
            path = folder / name
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        return load_campaign(root, slug)

    return write


@pytest.fixture
def campaign_copy(tmp_path: Path) -> Callable[[str], CampaignConfig]:
    """A private copy of a real campaign folder, safe to modify in a test."""

    def copy(slug: str) -> CampaignConfig:
        root = tmp_path / "copies"
        shutil.copytree(TEMPLATES / slug, root / slug)
        return load_campaign(root, slug)

    return copy
