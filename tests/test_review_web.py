"""`outreach review` over real HTTP: the app under uvicorn on 127.0.0.1, every page and rule."""

from __future__ import annotations

import email
import email.policy
import html
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session
from typer.testing import CliRunner

from outreach.cli import app as cli
from outreach.errors import CampaignError
from outreach.letters.approval import require_approval
from outreach.letters.campaign_file import load_campaign
from outreach.letters.recipients import table
from outreach.models import Approval
from outreach.web.review.access import COOKIE
from outreach.web.review.views import LETTER_CSP
from tests.factories import add_contact
from tests.fixtures_review import SCRIPT_NAME, ReviewSite, StartReview, csrf_of


def decisions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table(Approval))).scalar_one())


def contact_id(site: ReviewSite, client: httpx.Client, search: str) -> int:
    page = client.get("/recipients", params={"q": search}).text
    found = re.findall(r'href="/letters/(\d+)', page)
    assert len(found) == 1, f"{search!r} matches {len(found)} recipients"
    return int(found[0])


def post_decision(client: httpx.Client, **fields: str) -> httpx.Response:
    page = client.get("/decide").text
    fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]{64})"', page)
    assert fingerprint is not None
    form = {"csrf": csrf_of(page), "fingerprint": fingerprint.group(1), **fields}
    return client.post("/decide", data=form)


def send_dry_run(site: ReviewSite, tmp_path: Path) -> str:
    """`outreach send --dry-run` on the review's database and folder; the error line, or ''."""
    result = CliRunner().invoke(
        cli,
        ["--database", str(site.engine.url), "--templates", str(site.templates), "send", "-c", "2026",
         "--dry-run", "--yes", "--outbox", str(tmp_path / "outbox")],
    )  # fmt: skip
    return result.stderr if "Error:" in result.stderr else ""


def test_the_overview_shows_campaign_audience_check_and_approval(site: ReviewSite) -> None:
    with site.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert "Week van Het Vergeten Kind 2026: gezinshulp eerst" in page
    assert (
        html.escape("Gezinshulp eerst: minder kinderen onnodig uit huis in {{ municipality.name }}") in page
    )
    assert html.escape("Het Vergeten Kind <wereldvanaandacht@hetvergetenkind.nl>") in page
    assert "ma, di, wo, do, vr 08:00-18:00 (Europe/Amsterdam)" in page
    assert "5 letters/s, 1/s per recipient domain" in page
    assert re.search(r"<strong>6</strong>\s*recipients", page)  # 4 in Utrecht, 1 in Groningen, griffies not
    assert re.search(r"<strong>4</strong>\s*letters render", page)
    assert "afgemeld@utrecht.nl (raadslid, Utrecht)</a></td><td>suppressed: opt-out" in page
    assert "invalid: not an e-mail address" in page
    assert ">Not approved<" in page
    assert response.headers["content-security-policy"].startswith("default-src 'self'")
    assert response.headers["cache-control"] == "no-store"


def test_the_session_cookie_is_httponly_and_samesite_strict(site: ReviewSite) -> None:
    with site.client() as client:
        cookie = client.get("/").headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie


def test_a_contact_named_like_a_script_is_shown_as_text_everywhere(site: ReviewSite) -> None:
    escaped = html.escape(SCRIPT_NAME)
    with site.client() as client:
        listing = client.get("/recipients", params={"q": "hacker"}).text
        letter_id = contact_id(site, client, "hacker")
        letter = client.get(f"/letters/{letter_id}").text
        frame = client.get(f"/letters/{letter_id}/frame").text
        overview = client.get("/").text
    for page in (listing, letter, overview):
        assert SCRIPT_NAME not in page
    assert f"{escaped} Hacker" in listing  # the name
    assert f"<td>{escaped}</td>" in listing  # the party column
    assert f"<td>&#34;{escaped} Hacker&#34; &lt;script@utrecht.nl&gt;</td>" in letter  # the To header
    assert f"<code>contact.voornaam</code></th><td>{escaped}</td>" in letter  # the merge data
    assert SCRIPT_NAME not in frame and escaped in frame  # the letter's own HTML template escapes it too
    assert re.search(r"<option( selected)?>" + re.escape(escaped) + "</option>", listing)


def test_the_letter_frame_is_sandboxed_with_its_own_csp(site: ReviewSite) -> None:
    with site.client() as client:
        anna = contact_id(site, client, "anna@utrecht.nl")
        page = client.get(f"/letters/{anna}").text
        frame = client.get(f"/letters/{anna}/frame")
    iframe = re.search(r"<iframe[^>]*>", page)
    assert iframe is not None
    assert f'src="/letters/{anna}/frame"' in iframe.group(0)
    assert re.search(r"\ssandbox[\s>]", iframe.group(0)) and "allow-scripts" not in iframe.group(0)
    assert frame.status_code == 200
    assert frame.headers["content-security-policy"] == LETTER_CSP
    directives = {part.strip().split(" ")[0]: part.strip() for part in LETTER_CSP.split(";")}
    assert directives["default-src"] == "default-src 'none'" and "sandbox" in directives
    assert "script-src" not in directives
    assert "Geachte mevrouw Van Dijk" in frame.text


def test_one_letter_shows_headers_text_attachments_and_merge_data(site: ReviewSite) -> None:
    pdf = (site.folder / "handreiking-gezinshulp-eerst.pdf").read_bytes()
    with site.client() as client:
        anna = contact_id(site, client, "anna@utrecht.nl")
        page = client.get(f"/letters/{anna}").text
        inline = client.get(f"/letters/{anna}/attachments/0")
        download = client.get(f"/letters/{anna}/attachments/0", params={"download": "1"})
        eml = client.get(f"/letters/{anna}/message.eml")
        missing = client.get(f"/letters/{anna}/attachments/1")
    for header in ("From", "To", "Cc", "Reply-To", "Subject", "List-Unsubscribe"):
        assert f'<th scope="row">{header}</th>' in page
    assert "Griffie Utrecht &lt;griffie@utrecht.nl&gt;" in page
    assert '<pre class="letter-text">' in page and "Geachte mevrouw Van Dijk," in page
    assert "<code>aanhef</code></th><td>Geachte mevrouw Van Dijk</td>" in page
    assert "<code>municipality.name</code></th><td>Utrecht</td>" in page
    assert inline.content == pdf and inline.headers["content-type"] == "application/pdf"
    assert inline.headers["content-disposition"].startswith("inline;")
    assert (
        download.headers["content-disposition"] == 'attachment; filename="handreiking-gezinshulp-eerst.pdf"'
    )
    message = email.message_from_bytes(eml.content, policy=email.policy.SMTP)
    assert message["To"] == "Anna van Dijk <anna@utrecht.nl>"
    assert missing.status_code == 404


def test_recipients_are_filtered_searched_and_paged_on_the_server(site: ReviewSite) -> None:
    with Session(site.engine) as session:
        for number in range(55):
            add_contact(
                session, f"lid{number:02d}@groningen.nl", cbs_code="GM0014", achternaam=f"Lid{number:02d}"
            )
        session.commit()
    with site.client() as client:
        groningen = client.get("/recipients", params={"municipality": "GM0014"}).text
        second = client.get("/recipients", params={"municipality": "GM0014", "page": "2"}).text
        problems = client.get("/recipients", params={"problem": "any"}).text
        party = client.get("/recipients", params={"party": "VVD", "province": "Utrecht"}).text
        nobody = client.get("/recipients", params={"q": "niemand-heet-zo"}).text
    assert "56 recipients, 1–50 shown" in groningen and "Page 1 of 2" in groningen
    assert 'href="/recipients?municipality=GM0014&amp;page=2"' in groningen
    assert "56 recipients, 51–56 shown" in second and "Lid54" in second and "Lid00" not in second
    assert "2 recipients" in problems and "suppressed: opt-out" in problems and "kapot" in problems
    assert "2 recipients" in party
    assert "0 recipients" in nobody and "Nobody matches these filters." in nobody


def test_previous_and_next_step_through_the_filtered_list(site: ReviewSite) -> None:
    with site.client() as client:
        listing = client.get("/recipients", params={"municipality": "GM0344"}).text
        ids = [int(i) for i in re.findall(r'href="/letters/(\d+)\?municipality=GM0344"', listing)]
        assert len(ids) == 5
        first = client.get(f"/letters/{ids[0]}", params={"municipality": "GM0344"}).text
        middle = client.get(f"/letters/{ids[2]}", params={"municipality": "GM0344"}).text
    assert 'id="previous"' not in first
    assert f'id="next" rel="next" href="/letters/{ids[1]}?municipality=GM0344"' in first
    assert f'href="/letters/{ids[1]}?municipality=GM0344">Previous letter' in middle
    assert f'href="/letters/{ids[3]}?municipality=GM0344">Next letter' in middle
    assert "<span>3 of 5</span>" in middle


def test_a_post_without_the_csrf_token_is_refused(site: ReviewSite) -> None:
    with site.client() as client:
        page = client.get("/decide").text
        fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]{64})"', page)
        assert fingerprint is not None
        form = {"decision": "approve", "name": "Anna", "fingerprint": fingerprint.group(1)}
        missing = client.post("/decide", data=form)
        wrong = client.post("/decide", data={**form, "csrf": "x" * 43})
    with site.client() as stranger:  # another browser: its own session, so the token is not its own
        stolen = stranger.post("/decide", data={**form, "csrf": csrf_of(page)})
    assert [missing.status_code, wrong.status_code, stolen.status_code] == [403, 403, 403]
    assert "Traceback" not in missing.text
    assert decisions(site.engine) == 0


def test_approving_in_the_review_is_what_send_accepts(site: ReviewSite, tmp_path: Path) -> None:
    assert "has not been approved" in send_dry_run(site, tmp_path)
    with site.client() as client:
        response = post_decision(client, decision="approve", name="Anna Reviewer", comment="Klopt <helemaal>")
        assert response.status_code == 303
        done = client.get(response.headers["location"]).text
        overview = client.get("/").text
    assert "Recorded: approved by Anna Reviewer" in done
    assert "Klopt &lt;helemaal&gt;" in overview and ">Approved<" in overview
    require_approval(site.engine, load_campaign(site.templates, "2026"))
    assert send_dry_run(site, tmp_path) == ""


def test_a_template_changed_after_approval_is_shown_and_refused_by_send(
    site: ReviewSite, tmp_path: Path
) -> None:
    with site.client() as client:
        assert post_decision(client, decision="approve", name="Anna").status_code == 303
        letter = site.folder / "brief.txt.j2"
        letter.write_text(
            letter.read_text(encoding="utf-8") + "PS Een zin die niemand zag.\n", encoding="utf-8"
        )
        overview = client.get("/").text
    assert ">Changed<" in overview
    assert "What changed since Anna approved it on" in overview
    assert "<code>brief.txt.j2</code> changed" in overview
    assert '<span class="add">+PS Een zin die niemand zag.</span>' in overview
    error = send_dry_run(site, tmp_path)
    assert "changed since Anna approved it" in error and "brief.txt.j2 changed" in error


def test_approving_a_version_you_did_not_see_is_refused(site: ReviewSite) -> None:
    with site.client() as client:
        page = client.get("/decide").text
        (site.folder / "campaign.toml").write_text(
            (site.folder / "campaign.toml").read_text(encoding="utf-8") + "# later edit\n", encoding="utf-8"
        )
        fingerprint = re.search(r'name="fingerprint" value="([0-9a-f]{64})"', page)
        assert fingerprint is not None
        form = {
            "csrf": csrf_of(page),
            "fingerprint": fingerprint.group(1),
            "decision": "approve",
            "name": "A",
        }
        response = client.post("/decide", data=form)
    assert response.status_code == 409
    assert "changed while you were reviewing it" in response.text
    assert decisions(site.engine) == 0


def test_four_eyes_in_the_review(site: ReviewSite, tmp_path: Path) -> None:
    toml = site.folder / "campaign.toml"
    toml.write_text("approvals = 2\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    with site.client() as anna:
        assert post_decision(anna, decision="approve", name="Anna").status_code == 303
        assert post_decision(anna, decision="approve", name=" anna ").status_code == 303
        partly = anna.get("/").text
    assert ">Partly approved<" in partly and "another person must approve this version" in partly
    assert "only Anna approved it so far" in send_dry_run(site, tmp_path)
    with site.client() as bert:
        assert post_decision(bert, decision="approve", name="Bert").status_code == 303
        approved = bert.get("/").text
    assert ">Approved<" in approved
    assert send_dry_run(site, tmp_path) == ""


def test_a_rejection_needs_a_reason_and_stops_send(site: ReviewSite, tmp_path: Path) -> None:
    with site.client() as client:
        assert post_decision(client, decision="approve", name="Anna").status_code == 303
        refused = post_decision(client, decision="reject", name="Bert", reason="  ")
        assert refused.status_code == 409 and "a rejection needs a reason" in refused.text
        assert post_decision(client, decision="reject", name="Bert", reason="Te lang").status_code == 303
        overview = client.get("/").text
    assert ">Rejected<" in overview and "by Bert on" in overview and "Te lang" in overview
    assert '<tr class="decision-rejected">' in overview
    assert "was rejected by Bert" in send_dry_run(site, tmp_path)


def test_approval_is_refused_while_a_letter_fails(site: ReviewSite) -> None:
    (site.folder / "brief.txt.j2").write_text("{{ aanhef }} van {{ contact.party }}\n", encoding="utf-8")
    with site.client() as client:
        page = client.get("/").text
        decide = client.get("/decide").text
        refused = post_decision(client, decision="approve", name="Anna")
    assert "field &#39;contact.party&#39; is missing" in page
    assert "cor@groningen.nl" in page
    assert '<button type="submit" disabled>Approve</button>' in decide
    assert refused.status_code == 409 and "cannot be approved: 1 letter(s) fail to render" in refused.text


def test_a_campaign_that_does_not_load_is_explained(site: ReviewSite) -> None:
    (site.folder / "brief.txt.j2").write_text("{% if %}\n", encoding="utf-8")
    with site.client() as client:
        response = client.get("/")
    assert response.status_code == 409
    assert "Campaign 2026 does not load" in response.text and "brief.txt.j2:1" in response.text
    assert "Traceback" not in response.text


def test_unknown_letters_and_foreign_host_names_are_refused(site: ReviewSite) -> None:
    with site.client() as client:
        assert client.get("/letters/999999").status_code == 404
        assert client.get("/", headers={"host": "localhost"}).status_code == 200
        rebinding = client.get("/", headers={"host": "evil.example"})
    assert rebinding.status_code == 400


def test_get_and_head_change_nothing(site: ReviewSite) -> None:
    with site.client() as client:
        for path in ("/", "/decide", "/decide?decision=approve&name=Anna", "/recipients"):
            assert client.get(path).status_code == 200
            head = client.head(path)
            assert head.status_code == 200 and head.content == b""
        assert client.get("/logout").status_code == 405
    assert decisions(site.engine) == 0


def test_with_a_password_every_page_needs_a_login(start_review: StartReview) -> None:
    with start_review(password="geheim wachtwoord", loopback=False) as site, site.client() as client:
        assert client.get("/").headers["location"] == "/login"
        assert client.get("/letters/1/frame").status_code == 303
        login = client.get("/login")
        assert "Log out" not in login.text
        before = client.cookies[COOKIE]
        assert client.post("/login", data={"password": "geheim wachtwoord"}).status_code == 403  # no CSRF
        wrong = client.post("/login", data={"csrf": csrf_of(login.text), "password": "fout"})
        assert wrong.status_code == 401 and "That is not the password." in wrong.text
        right = client.post("/login", data={"csrf": csrf_of(login.text), "password": "geheim wachtwoord"})
        assert right.status_code == 303
        assert "HttpOnly" in right.headers["set-cookie"] and "SameSite=strict" in right.headers["set-cookie"]
        assert client.cookies[COOKIE] != before  # a new session id after the login
        overview = client.get("/")
        assert overview.status_code == 200 and "Log out" in overview.text
        logout = client.post("/logout", data={"csrf": csrf_of(overview.text)})
        assert logout.headers["location"] == "/login"
        assert client.get("/").status_code == 303
        assert client.get("/", headers={"host": "review.example.org"}).status_code == 303  # any host name


def test_review_on_a_network_address_needs_the_password(runner: CliRunner, db_url: str) -> None:
    result = runner.invoke(
        cli, ["--database", db_url, "review", "-c", "2026", "--host", "0.0.0.0", "--no-browser"]
    )
    assert result.exit_code == 1
    assert "reachable from the network on 0.0.0.0: set OUTREACH_REVIEW_PASSWORD first" in result.stderr
    assert "Traceback" not in result.output


def test_the_review_command_serves_until_interrupted(review_people: Engine, review_templates: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    command = [sys.executable, "-m", "outreach", "--database", str(review_people.url), "--templates",
               str(review_templates), "review", "-c", "2026", "--no-browser"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl\+C to stop\)", line)
        assert found, line + (process.stderr.read() if process.stderr else "")
        assert "Week van Het Vergeten Kind" in httpx.get(found.group(1), timeout=10).text
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr  # Ctrl+C is the normal end of a review
    assert "Traceback" not in stderr
    assert "4 letters render, 0 fail, 1 suppressed, 1 unusable" in stderr


def test_require_approval_still_names_a_changed_file(site: ReviewSite) -> None:
    """The send-side check is the one `outreach approve` always had, whatever the review recorded."""
    with site.client() as client:
        post_decision(client, decision="approve", name="Anna")
    (site.folder / "handreiking-gezinshulp-eerst.pdf").write_bytes(b"%PDF-1.4 anders\n")
    with pytest.raises(CampaignError, match=r"handreiking-gezinshulp-eerst\.pdf changed"):
        require_approval(site.engine, load_campaign(site.templates, "2026"))


def test_a_port_in_use_is_a_one_line_error(runner: CliRunner, db_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(cli, ["--database", db_url, "review", "-c", "2026", "--port", str(port)])
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.output


def test_the_pdf_letter_is_an_attachment_to_open(start_review: StartReview) -> None:
    """wethouders-jeugd sends a formal PDF letter per recipient (WeasyPrint): the review shows the one
    this recipient gets, composed by the same composer as `send`, with its kenmerk."""
    with start_review(slug="wethouders-jeugd") as site, site.client() as client:
        wim = contact_id(site, client, "weth@utrecht.nl")
        page = client.get(f"/letters/{wim}").text
        pdf = client.get(f"/letters/{wim}/attachments/0")
        download = client.get(f"/letters/{wim}/attachments/0", params={"download": "1"})
    link = re.search(r'<a href="/letters/\d+/attachments/0">(Brief aan [^<]+\.pdf)</a>', page)
    assert link, "the PDF letter is listed among the attachments"
    assert "Wim Wethouder" in link.group(1)
    kenmerk = re.search(r"<code>kenmerk</code></th><td>([^<]+)</td>", page)
    assert kenmerk and kenmerk.group(1).startswith("HVK/")
    assert kenmerk.group(1).replace("/", "-") in html.unescape(link.group(1))
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    disposition = download.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="Brief_aan_Wim_Wethouder_HVK-')
    assert "filename*=UTF-8''Brief%20aan%20Wim%20Wethouder%20%E2%80%93%20HVK-" in disposition


def test_an_unknown_campaign_is_a_one_line_error(runner: CliRunner, db_url: str, engine: Engine) -> None:
    result = runner.invoke(cli, ["--database", db_url, "review", "-c", "nope", "--no-browser"])
    assert result.exit_code == 1
    assert "campaign 'nope'" in result.stderr and "Traceback" not in result.output
