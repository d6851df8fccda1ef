"""The /logs dashboard in a real headless browser (Debian's chromium driven by Playwright).

Skipped when chromium or Playwright is missing, except under CI (HOOKWAY_CI set), where a missing
browser is a failure.
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("HOOKWAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

HTTP = httpx.Client(timeout=10)


def _need(condition: bool, reason: str) -> None:
    if condition:
        return
    if os.environ.get("HOOKWAY_CI"):
        pytest.fail(f"{reason} (HOOKWAY_CI is set: browser tests must run)")
    pytest.skip(reason)


@pytest.fixture
def browser_page():
    _need(os.path.exists(CHROMIUM), f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (pip install playwright; never `playwright install`)")
    # expect() gives up after 5 s by default: too short for a browser on a loaded machine. A
    # longer deadline costs nothing when the page is right (each check returns when it holds).
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.js_errors = errors
        try:
            yield page
        finally:
            browser.close()


def test_dashboard_live_filter_detail(logstore_gateway, browser_page, tmp_path):
    from playwright.sync_api import expect

    gw = logstore_gateway()
    page = browser_page
    assert gw.post({"model": "e1/alpha", "prompt": "first question"}).status_code == 200
    assert gw.post({"model": "e2/beta", "prompt": "second question", "stream": True}).status_code == 200
    gw.wait_written(2)

    page.goto(gw.url + "/logs")
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#live-status")).to_have_class("live")
    expect(page.locator("#c-count")).to_have_text("2")
    expect(page.locator("#chart rect.bar").first).to_be_visible()

    # a new request appears at the top without reloading
    assert gw.post({"model": "e2/gamma", "prompt": "a live one"}).status_code == 200
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("e2/gamma")
    expect(rows.first).to_contain_text("200")
    expect(page.locator("#c-count")).to_have_text("3")

    # an error shows as such
    assert gw.post({"model": "nowhere", "prompt": "x"}).status_code == 404
    expect(rows).to_have_count(4)
    expect(rows.first.locator("td.st")).to_have_text("404")

    # filter by provider: only e2's requests; a new e1 request does not show up live
    page.select_option("#f-provider", "e2")
    expect(rows).to_have_count(2)
    for text in rows.all_inner_texts():
        assert "e2" in text
    assert gw.post({"model": "e1/alpha", "prompt": "hidden by the filter"}).status_code == 200
    assert gw.post({"model": "e2/beta", "prompt": "shown by the filter"}).status_code == 200
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("e2/beta")

    # content search, then clear
    page.fill("#f-q", "second question")
    expect(rows).to_have_count(1)
    page.click("#f-clear")
    expect(rows).to_have_count(6)

    # status filter
    page.select_option("#f-status", "error")
    expect(rows).to_have_count(1)
    page.select_option("#f-status", "")
    expect(rows).to_have_count(6)

    # cache hit filter (yes / no / any): only cached rows, also for rows arriving live
    gw.call(gw.logstore.hookway_log([_record(model="e1/cached", cache_hit=True)]))
    expect(rows).to_have_count(7)
    page.select_option("#f-cache_hit", "true")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("e1/cached")
    expect(rows.first).to_contain_text("cache hit")
    assert gw.post({"model": "e1/alpha", "prompt": "not from the cache"}).status_code == 200
    gw.call(gw.logstore.hookway_log([_record(model="e1/cached-too", cache_hit=True)]))
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("e1/cached-too")
    for text in rows.all_inner_texts():
        assert "cache hit" in text
    page.select_option("#f-cache_hit", "false")
    expect(rows).to_have_count(7)
    for text in rows.all_inner_texts():
        assert "cache hit" not in text
    page.select_option("#f-cache_hit", "")
    expect(rows).to_have_count(9)

    # time to first token: a lower and an upper bound, also for rows arriving live
    gw.call(gw.logstore.hookway_log([_record(model="e1/slow-start", ttft_ms=900.0),
                                     _record(model="e1/quick-start", ttft_ms=20.0)]))
    expect(rows).to_have_count(11)
    page.fill("#f-min_ttft", "500")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("e1/slow-start")
    gw.call(gw.logstore.hookway_log([_record(model="e1/slow-too", ttft_ms=750.0),
                                     _record(model="e1/quick-too", ttft_ms=5.0)]))
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("e1/slow-too")
    page.fill("#f-max_ttft", "800")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("e1/slow-too")
    expect(page.locator("#c-count")).to_have_text("1")
    page.click("#f-clear")
    expect(rows).to_have_count(13)
    expect(page.locator("#c-count")).to_have_text("13")

    # open a request: the conversation and the response
    page.locator("#rows tr", has_text="e2/beta").last.click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#d-request")).to_contain_text("second question")
    expect(page.locator("#d-response")).to_contain_text("noitseuq dnoces")
    expect(page.locator("#d-meta")).to_contain_text("e2")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    assert not page.js_errors, page.js_errors


def _record(**kw):
    """A log record as the core hands it to the sink (for states a plain request cannot produce)."""
    import time
    import uuid

    from hookway.pipeline import LogRecord

    base = dict(id=uuid.uuid4().hex, time=time.time(), dialect="echo", operation="chat", model="e1/m",
                provider="e1", upstream_model="m", rule=None, key_id=None, key_name=None, team_id=None,
                customer_id=None, status=200, error=None, latency_ms=1.0, ttft_ms=None, upstream_ms=None,
                input_tokens=1, output_tokens=1, cached_tokens=0, cache_hit=False, cache_similarity=None,
                fallback_index=0, stream=False, passthrough=False, request=None, response=None, extra={})
    base.update(kw)
    return LogRecord(**base)


def test_dashboard_asks_for_the_admin_token(logstore_gateway, browser_page):
    from playwright.sync_api import expect

    token = "d" * 40
    gw = logstore_gateway(server={"admin_token": token})
    gw.post({"model": "e1/alpha", "prompt": "behind a token"})
    gw.wait_written(1)
    page = browser_page
    page.goto(gw.url + "/logs")
    expect(page.locator("#token-box")).to_be_visible()
    page.fill("#token", token)
    page.click("#token-save")
    expect(page.locator("#rows tr")).to_have_count(1)
    expect(page.locator("#live-status")).to_have_class("live")
    page.locator("#rows tr").first.click()
    expect(page.locator("#d-request")).to_contain_text("behind a token")
