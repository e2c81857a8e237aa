"""The pages in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, never a download).

Leaderboard rendering, a team named ``<script>alert(1)</script>`` shown as text, the team page behind its
token, the countdown before the deadline and the frozen final ranking after it (time injected), a
phone-sized screen, and JavaScript switched off.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from .conftest import DEADLINE, add_team, bearer, make_comp

CHROMIUM = Path("/usr/bin/chromium")
XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed; install Debian's chromium: apt-get install -y chromium")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


@pytest.fixture
def site(tmp_path, make_service, live):
    """A live server (SQLite) with three teams, one of them named like an attack, and their tokens."""
    comp = make_comp(tmp_path, None)
    service = make_service(comp)
    tokens = {name: add_team(service, name) for name in (XSS, "Wrens & Co", "idle")}
    service.submit(_body(comp, XSS, 9), authorization=bearer(tokens[XSS])["Authorization"])
    service.submit(_body(comp, "Wrens & Co", 6), authorization=bearer(tokens["Wrens & Co"])["Authorization"])
    return live(service), tokens, service


def _body(comp, team, right):
    import json

    return json.dumps(comp.body(team, public_right=right)).encode()


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    page.dialogs, page.errors = [], []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    yield page
    context.close()


def test_the_leaderboard_renders_and_a_script_team_name_is_text(site, page):
    server, _, _ = site
    response = page.goto(server.url + "/")
    assert response.status == 200 and "script-src" not in response.headers["content-security-policy"]
    assert page.title() == "Birds <2027>" and page.inner_text("h1") == "Birds <2027>"
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 3
    first = [cell.strip() for cell in rows.nth(0).locator("td").all_inner_texts()]
    assert first[:4] == ["1", XSS, "75.00%", "1"]
    assert [c.strip() for c in rows.nth(1).locator("td").all_inner_texts()][:3] == ["2", "Wrens & Co", "50.00%"]
    assert [c.strip() for c in rows.nth(2).locator("td").all_inner_texts()][:2] == ["–", "idle"]
    assert page.locator("script").count() == 0 and page.dialogs == [] and page.errors == []
    assert "Private" not in page.inner_text("#leaderboard")


def test_the_team_page_needs_its_token(site, page):
    server, tokens, _ = site
    page.goto(server.url + "/team")
    assert page.locator("#submissions").count() == 0
    page.fill("#token", "fgvc_wrong")
    page.click("button[type=submit]")
    assert "belongs to no team" in page.inner_text("#error") and page.locator("#submissions").count() == 0
    assert page.errors == ["Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    page.errors.clear()
    page.fill("#token", tokens["Wrens & Co"])
    page.click("button[type=submit]")
    assert "Team Wrens & Co: rank 2" in page.inner_text("#team")
    assert page.locator("#submissions tbody tr").count() == 1 and "50.00%" in page.inner_text("#submissions")
    assert tokens["Wrens & Co"] not in page.url and page.errors == []


def test_countdown_before_the_deadline_and_frozen_final_ranking_after(site, page, clock):
    server, _, _ = site
    page.goto(server.url + "/")
    assert page.inner_text("#time-left") == "5 days 11 h 59 min left"
    clock.now = DEADLINE - timedelta(seconds=30)
    page.reload()
    assert page.inner_text("#time-left") == "less than a minute left"
    clock.now = DEADLINE + timedelta(hours=1)
    page.reload()
    status = page.inner_text("#status")
    assert "Closed at 2027-01-15 23:59 UTC" in status and "Final ranking" in status
    assert page.locator("#time-left").count() == 0
    headers = page.locator("#leaderboard thead th").all_inner_texts()
    assert "Private" in headers
    # the private ranking: both teams have 13 of 16 private images right, so they share rank 1
    ranks = [row.locator("td").first.inner_text() for row in page.locator("#leaderboard tbody tr").all()]
    assert ranks == ["1", "1", "–"]


def test_readable_on_a_phone_and_without_javascript(site, browser):
    server, tokens, _ = site
    context = browser.new_context(viewport={"width": 360, "height": 740}, java_script_enabled=False,
                                  is_mobile=True, device_scale_factor=2)
    page = context.new_page()
    page.goto(server.url + "/")
    assert page.locator("#leaderboard tbody tr").count() == 3
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # no sideways scrolling
    assert not page.locator("th.wide").first.is_visible()  # the narrow layout drops the date column
    page.goto(server.url + "/team")
    page.fill("#token", tokens["idle"])
    page.click("button[type=submit]")
    assert "No submissions yet" in page.inner_text("main")
    context.close()
