"""The browser harness does what the page tests will rely on: it drives a real Chromium from
trio, reads what a page shows, saves screenshots, runs axe, records console messages, websocket
frames and requests, and fails a test whose page had a problem it did not expect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from omni.server import RunningServer
from tests.browser.harness import (
    PHONE,
    Browser,
    BrowserUnavailable,
    Chromium,
    Screenshots,
    open_browser,
)
from tests.browser.site import JS, ForeignSite

pytestmark = pytest.mark.browser

#: A page that passes axe: a language, a title, a landmark, named controls, enough contrast.
CLEAN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
  <h1>Talk to us</h1>
  <label for="name">Your name</label> <input id="name" autocomplete="name">
  <button id="greet" type="button">Say hello</button>
  <p id="news" aria-live="polite"></p>
</main>
<script src="/greet.js"></script>
</body></html>"""

GREET = """
const news = document.getElementById("news");
const name = document.getElementById("name");
document.getElementById("greet").addEventListener("click", () => {
  news.textContent = "Hello, " + (name.value || "visitor") + "!";
});
name.addEventListener("keydown", (e) => { if (e.key === "Enter") news.textContent = "Sent."; });
"""


def _page(body: str, title: str = "Test") -> str:
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{title}</title></head><body><main>{body}</main></body></html>"""


async def test_a_page_is_driven_read_and_photographed(
    browser: Browser, foreign_site: ForeignSite, screenshots: Screenshots
) -> None:
    foreign_site.serve("/greet.js", GREET, JS)
    url = foreign_site.serve("/", CLEAN)
    page = await browser.new_page(viewport=PHONE, locale="pt-BR")
    assert await page.goto(url) == 200
    assert await page.evaluate("navigator.language") == "pt-BR"
    assert await page.evaluate("[innerWidth, innerHeight]") == list(PHONE)

    await page.click("#greet")
    assert await page.text("#news") == "Hello, visitor!"
    await page.fill("#name", "Vera")
    # What the harness does not wrap, on Playwright's own page (on the browser's thread):
    await page.run(lambda p: p.get_by_role("button", name="Say hello").click())
    await page.wait_for_function("document.getElementById('news').textContent.includes('Vera')")
    assert await page.text("[aria-live=polite]") == "Hello, Vera!"
    await page.press("#name", "Enter")
    assert await page.text("#news") == "Sent."
    # Keyboard only: the focus walks from the field to the button, which Enter presses.
    await page.click("#name")
    await page.keyboard("Tab")
    assert await page.evaluate("document.activeElement.id") == "greet"
    await page.keyboard("Enter")
    assert await page.text("#news") == "Hello, Vera!"

    shot = await page.screenshot("greeted")
    assert shot == screenshots.folder / "test_a_page_is_driven_read_and_photographed-greeted.png"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.stat().st_size > 1000
    assert shot in screenshots.saved


async def test_axe_finds_what_is_inaccessible_and_passes_a_clean_page(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    foreign_site.serve("/greet.js", GREET, JS)
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/clean", CLEAN))
    assert [str(v) for v in await page.axe() if v.serious] == []

    broken = '<button id="mute"></button><p style="color:#bbb;background:#fff">faint</p>'
    await page.goto(foreign_site.serve("/broken", _page(broken)))
    violations = {v.id: v for v in await page.axe()}
    assert violations["button-name"].targets == ("#mute",)
    assert violations["button-name"].serious
    assert violations["color-contrast"].serious
    # Only within a part of the page:
    assert {v.id for v in await page.axe(within="#mute")} == {"button-name"}


async def test_console_messages_are_recorded_and_are_no_problem(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    script = "<script>console.log('hi'); console.error('not fatal')</script>"
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/", _page(script)))
    await page.wait_for_function("true")
    assert [(m.type, m.text) for m in page.console] == [("log", "hi"), ("error", "not fatal")]
    assert page.problems == []


async def test_an_unexpected_problem_fails_the_test(
    chromium: Chromium, foreign_site: ForeignSite, tmp_path: Path
) -> None:
    script = "<script>throw new Error('boom')</script>"
    url = foreign_site.serve("/", _page(script))
    with pytest.raises(AssertionError, match=r"(?s)problems:.*uncaught: Error: boom"):
        async with open_browser(chromium, "unexpected", tmp_path) as browser:
            page = await browser.new_page()
            await page.goto(url)
            await page.evaluate("0")  # the error's report comes before this answer
    # A test that fails for its own reason keeps it, with the problems as notes; either way
    # each page open at the end leaves a screenshot.
    with pytest.raises(KeyError) as raised:
        async with open_browser(chromium, "failing", tmp_path) as browser:
            page = await browser.new_page()
            await page.goto(url)
            await page.evaluate("0")
            raise KeyError("the test's own failure")
    assert (tmp_path / "unexpected-last-0.png").stat().st_size > 0
    assert any("uncaught: Error: boom" in note for note in raised.value.__notes__)
    assert (tmp_path / "failing-last-0.png").stat().st_size > 0


async def test_an_expected_problem_does_not_fail_the_test_and_axe_keeps_to_the_csp(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    """A page under a strict Content Security Policy: its inline script is refused (a problem
    the test expects); axe itself, run through the DevTools protocol, breaks no rule of it."""
    csp = {"Content-Security-Policy": "default-src 'self'"}
    inline = "<p id='x'>before</p><script>document.getElementById('x').textContent = 'ran'</script>"
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/", _page(inline), headers=csp))
    problem = await page.expect_problem(r"Content Security Policy.*script-src")
    assert problem.kind == "csp"
    assert await page.text("#x") == "before"
    assert [str(v) for v in await page.axe() if v.serious] == []
    await page.evaluate("0")
    assert page.problems == []

    with pytest.raises(AssertionError, match="no problem matching 'never'"):
        await page.expect_problem("never", timeout=0.2)


async def test_a_request_blocked_by_cors_is_a_problem(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    foreign_site.serve("/data", "{}", "application/json")
    other_origin = foreign_site.url("/data", host="localhost")
    script = f"<script>fetch({other_origin!r}).catch(() => {{}})</script>"
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/", _page(script)))
    problem = await page.expect_problem("blocked by CORS policy")
    assert problem.kind == "cors"


async def test_websocket_frames_with_omni_are_observed(
    browser: Browser, foreign_site: ForeignSite, server: RunningServer
) -> None:
    """A page of a foreign site talks to a real Omni server; the harness sees both ways."""
    script = f"""<script>
      const ws = new WebSocket("{server.ws_url}/ws/visitor");
      ws.onopen = () => ws.send(JSON.stringify({{type: "ping"}}));
      ws.onmessage = (e) => {{ document.getElementById("got").textContent = e.data; ws.close(); }};
    </script><p id="got"></p>"""
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/", _page(script)))
    pong = await page.wait_for_frame("pong")
    assert pong.json() == {"type": "pong"}
    assert pong.url == f"{server.ws_url}/ws/visitor"
    ping = await page.wait_for_frame(lambda f: f.type == "ping", direction="sent")
    assert (ping.socket, pong.socket) == (0, 0)
    assert [(f.direction, f.type) for f in page.frames] == [("sent", "ping"), ("received", "pong")]
    await page.wait_for_function("document.getElementById('got').textContent !== ''")
    with pytest.raises(AssertionError, match=r"(?s)no received frame matching 'hello'.*pong"):
        await page.wait_for_frame("hello", timeout=0.2)


async def test_a_cross_site_iframe_is_observed_too(
    browser: Browser, foreign_site: ForeignSite, server: RunningServer
) -> None:
    """An embedding page (``localhost``) holds an iframe of another site (``127.0.0.1``), as a
    widget's chat frame would be: its sockets, console and errors are the page's."""
    inner = f"""<script>
      console.log("inside");
      const ws = new WebSocket("{server.ws_url}/ws/visitor");
      ws.onopen = () => ws.send(JSON.stringify({{type: "ping"}}));
    </script>"""
    inner_url = foreign_site.serve("/inner", _page(inner))
    outer = f'<iframe title="chat" src="{inner_url}"></iframe>'
    foreign_site.serve("/outer", _page(outer))
    page = await browser.new_page()
    await page.goto(foreign_site.url("/outer", host="localhost"))
    await page.wait_for_frame("pong")
    assert ("log", "inside") in [(m.type, m.text) for m in page.console]


async def test_requests_are_recorded_with_their_size(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    foreign_site.serve("/big.js", "/*" + "x" * 20_000 + "*/", JS)
    body = '<script src="/big.js"></script><script src="/missing.js"></script>'
    page = await browser.new_page()
    await page.goto(foreign_site.serve("/", _page(body)))
    requests = {r.url.rsplit("/", 1)[1]: r for r in await page.requests()}
    assert requests.keys() == {"", "big.js", "missing.js"}
    big = requests["big.js"]
    assert (big.host, big.method, big.resource_type, big.status) == (
        f"127.0.0.1:{foreign_site.port}",
        "GET",
        "script",
        200,
    )
    assert 20_000 < big.transfer_size < 21_000
    assert requests["missing.js"].status == 404
    # The browser fetches both scripts in parallel: their order on the wire is its own.
    assert foreign_site.requested[0] == "/"
    assert sorted(foreign_site.requested[1:]) == ["/big.js", "/missing.js"]
    # A missing script is no problem of the harness's: page tests assert on requests.
    assert page.problems == []


def test_a_missing_chromium_is_a_failure_that_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrowserUnavailable, match=r"apt-get install chromium"):
        Chromium.start(tmp_path / "chromium")


def test_a_missing_playwright_is_a_failure_that_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "playwright.async_api", None)
    with pytest.raises(BrowserUnavailable, match=r"playwright.*pip install -e '\.\[test\]'"):
        Chromium.start()
