"""The page at `/` in headless Chromium (Playwright, Debian's /usr/bin/chromium): a photo is chosen,
the top-5 appears, then the `fgvc explain` picture — or, for an exported file, the note saying the
picture needs the run."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed; install Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-proxy-server"])
        yield browser
        browser.close()


def _upload(browser, url: str, photo: Path):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("body[data-state=done]", timeout=WAIT_MS)
    return page, problems


def _top5_of(page) -> list[str]:
    return [cell.inner_text() for cell in page.query_selector_all("#top5 tbody td.id")]


def _expected(url: str, photo: Path) -> list[str]:
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as c:
        reply = c.post("/predict", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}).json()
    return [t["class_id"] for t in reply["predictions"][0]["top5"]]


def test_a_dropped_photo_shows_the_top5_and_the_explanation_picture(browser, serve, mmal_predictor, photos):
    server = serve(mmal_predictor)
    page, problems = _upload(browser, server.url, photos[0])
    assert _top5_of(page) == _expected(server.url, photos[0])
    names = [cell.inner_text() for cell in page.query_selector_all("#top5 tbody td.name")]
    assert names[0] == mmal_predictor.classes.name_of(mmal_predictor.classes.index_of(_top5_of(page)[0]))
    assert page.inner_text("#box").startswith("object box (x0, y0, x1, y1): ")
    picture = page.query_selector("#explanation")
    assert picture.is_visible() and picture.get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('explanation').naturalWidth") > 100  # the PNG decoded
    assert problems == []
    page.close()


def test_an_exported_file_shows_the_top5_and_says_the_picture_needs_the_run(browser, serve, mmal_onnx_predictor,
                                                                            photos):
    server = serve(mmal_onnx_predictor)
    page, problems = _upload(browser, server.url, photos[1])
    assert _top5_of(page) == _expected(server.url, photos[1])
    assert not page.query_selector("#explanation").is_visible()
    assert "needs the run" in page.inner_text("#explain-note")
    assert problems == []
    page.close()


def test_a_file_that_is_not_an_image_shows_the_services_message(browser, serve, mmal_onnx_predictor, tmp_path):
    server = serve(mmal_onnx_predictor)
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("body[data-state=ready]", timeout=WAIT_MS)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("body[data-state=error]", timeout=WAIT_MS)
    assert "'notes.jpg': not a readable image" in page.inner_text("#status")
    page.close()
