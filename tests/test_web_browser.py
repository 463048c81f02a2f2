"""The recipients' pages in a real headless Chromium: the link from a received letter, the button, the
confirmation; by mouse at 1200 px and by keyboard on a 360-px phone."""

from __future__ import annotations

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import select

from outreach.models import EventKind
from outreach.registry.keys import email_hash
from outreach.tracking.events import EVENT, SUPPRESSION
from tests.fixtures_web import WebSite


def heading(browser: webdriver.Chrome, text: str) -> WebElement:
    # While the next page replaces the old one, Chromium reports the old h1 as a node outside the
    # document (a WebDriverException, not StaleElementReference): keep waiting through it.
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), text)
    )
    return browser.find_element(By.TAG_NAME, "h1")


def suppression_reason(site: WebSite, address: str) -> str | None:
    with site.engine.connect() as conn:
        reason = conn.execute(
            select(SUPPRESSION.c.reason).where(SUPPRESSION.c.key_hash == email_hash(address))
        ).scalar()
    return None if reason is None else str(reason)


def web_events(site: WebSite, kind: str) -> list[str]:
    with site.engine.connect() as conn:
        return [str(t) for t in conn.execute(select(EVENT.c.text).where(EVENT.c.kind == kind)).scalars()]


def fits_the_window(browser: webdriver.Chrome) -> bool:
    return bool(browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def test_unsubscribe_from_a_received_letter_by_mouse(
    sent: tuple[WebSite, list[str]], browser: webdriver.Chrome
) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    browser.get(letter.unsubscribe_url)
    heading(browser, "Afmelden")
    assert "r***@gemeente0.nl" in browser.find_element(By.CSS_SELECTOR, ".address").text
    assert suppression_reason(site, addresses[0]) is None, "opening the page changed nothing"
    assert browser.find_element(By.ID, "keuze-alles").is_selected()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    heading(browser, "U bent afgemeld")
    assert (
        "U ontvangt geen post meer van Het Vergeten Kind"
        in browser.find_element(By.CSS_SELECTOR, ".notice").text
    )
    assert browser.get_cookies() == []
    assert suppression_reason(site, addresses[0]) == "opt-out"
    assert web_events(site, EventKind.OPT_OUT) == ["afgemeld via webpagina: alle post"]


def test_unsubscribe_from_this_campaign_by_keyboard_on_a_phone(
    sent: tuple[WebSite, list[str]], browser: webdriver.Chrome
) -> None:
    site, addresses = sent
    browser.set_window_size(360, 740)
    browser.get(site.letter(addresses[1]).unsubscribe_url)
    heading(browser, "Afmelden")
    assert fits_the_window(browser), "no sideways scrolling at 360 px"
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the skip link
    assert browser.switch_to.active_element.text == "Naar de inhoud"
    browser.switch_to.active_element.send_keys(Keys.TAB)  # the selected radio button
    assert browser.switch_to.active_element.get_attribute("id") == "keuze-alles"
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)  # choose "Alleen deze campagne"
    assert browser.find_element(By.ID, "keuze-campagne").is_selected()
    browser.switch_to.active_element.send_keys(Keys.TAB)
    button = browser.switch_to.active_element
    assert button.tag_name == "button" and button.text == "Afmelden"
    button.send_keys(Keys.ENTER)
    heading(browser, "U bent afgemeld")
    assert "Wij sturen u niets meer over" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert fits_the_window(browser)
    assert suppression_reason(site, addresses[1]) is None
    assert web_events(site, EventKind.OPT_OUT) == ["afgemeld via webpagina: alleen campagne eerste"]


def test_opt_in_from_a_received_letter(sent: tuple[WebSite, list[str]], browser: webdriver.Chrome) -> None:
    site, addresses = sent
    browser.get(site.letter(addresses[2]).optin_url)
    heading(browser, "Aanmelden voor de post van Het Vergeten Kind")
    assert "Een paar keer per jaar" in browser.find_element(By.TAG_NAME, "main").text
    assert web_events(site, EventKind.OPT_IN) == []
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    heading(browser, "Bedankt, u bent aangemeld")
    [proof] = web_events(site, EventKind.OPT_IN)
    assert "tekst 2026-1" in proof


def test_opt_in_after_an_opt_out_by_ticking_the_box(
    sent: tuple[WebSite, list[str]], browser: webdriver.Chrome
) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    browser.get(letter.unsubscribe_url)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    heading(browser, "U bent afgemeld")
    browser.find_element(By.LINK_TEXT, "Meld u opnieuw aan").click()
    heading(browser, "Aanmelden")
    box = browser.find_element(By.ID, "opheffen")
    assert not box.is_selected()
    browser.find_element(By.CSS_SELECTOR, "label[for=opheffen]").click()  # the label ticks it, too
    assert box.is_selected()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    heading(browser, "Bedankt, u bent aangemeld")
    assert "Uw eerdere afmelding is opgeheven" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    assert suppression_reason(site, addresses[0]) is None
