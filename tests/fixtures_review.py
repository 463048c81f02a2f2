"""Fixtures for the review tests: an audience with awkward names, a campaign copy, the app under uvicorn."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from outreach.models import Suppression
from outreach.registry.keys import email_hash
from outreach.web.review.app import create_review_app
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES
from tests.webserver import serve

SCRIPT_NAME = "<script>alert(1)</script>"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


@dataclass
class ReviewSite:
    url: str
    engine: Engine
    templates: Path  # the campaign folders (a private copy of campaign 2026 in templates/2026)

    @property
    def folder(self) -> Path:
        return self.templates / "2026"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=30)


@pytest.fixture
def review_people(registry: Engine) -> Engine:
    """Raadsleden of Utrecht (one named like a script, one suppressed, one with a broken address) and
    Groningen, and their griffies."""
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna", tussenvoegsel="van", achternaam="Dijk",
                    aanspreekvorm="mevrouw", party="D66")  # fmt: skip
        add_contact(session, "bert@utrecht.nl", voornaam="Bert", achternaam="Smit", party="CDA")
        add_contact(
            session, "script@utrecht.nl", voornaam=SCRIPT_NAME, achternaam="Hacker", party=SCRIPT_NAME
        )
        add_contact(session, "griffie@utrecht.nl", role="griffie")
        add_contact(session, "weth@utrecht.nl", role="wethouder", portfolio="Jeugd en onderwijs",
                    voornaam="Wim", achternaam="Wethouder", aanspreekvorm="heer")  # fmt: skip
        add_contact(session, "cor@groningen.nl", cbs_code="GM0014", voorletters="C.", achternaam="Bos")
        add_contact(session, "griffie@groningen.nl", role="griffie", cbs_code="GM0014")
        add_contact(session, "afgemeld@utrecht.nl", achternaam="Weg", party="VVD")
        broken = add_contact(session, "kapot@utrecht.nl", achternaam="Kapot", party="VVD")
        broken.email_normalized = "kapot"
        session.add(Suppression(key_hash=email_hash("afgemeld@utrecht.nl"), reason="opt-out", source="t"))
        session.commit()
    return registry


@pytest.fixture
def review_templates(tmp_path: Path) -> Path:
    root = tmp_path / "review-templates"
    for slug in ("2026", "wethouders-jeugd"):
        shutil.copytree(TEMPLATES / slug, root / slug)
    return root


StartReview = Callable[..., AbstractContextManager[ReviewSite]]


@pytest.fixture
def start_review(review_people: Engine, review_templates: Path) -> StartReview:
    """``with start_review(password=None, loopback=True, slug="2026") as site:`` the review of a
    campaign under uvicorn on 127.0.0.1."""

    @contextmanager
    def start(
        *, password: str | None = None, loopback: bool = True, slug: str = "2026"
    ) -> Iterator[ReviewSite]:
        app = create_review_app(review_people, review_templates, slug, password=password, loopback=loopback)
        with serve(app) as url:
            yield ReviewSite(url, review_people, review_templates)

    return start


@pytest.fixture
def site(start_review: StartReview) -> Iterator[ReviewSite]:
    with start_review() as running:
        yield running
