"""The embed script on a company's site, in real Chromium: a page served by a foreign site (a
real server on another loopback origin) carries ``<script async src=".../widget.js"
data-service="25">``; Omni runs on 127.0.0.1 with an operator driven over the websocket.

What a company expects of it: the button appears and opens the chat, which works; the site is
untouched (no global but ``Omni``, no CSS either way); the badge counts the operator's
messages while the chat is closed, also on the site's next page; ``Omni.identify`` skips the
form for a signed-in customer; and a site that is not among the service's ``allowed_origins``
cannot embed it at all.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from playwright.async_api import FrameLocator
from playwright.async_api import Page as PlaywrightPage

from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.browser.harness import Browser, Page
from tests.browser.operator import accept_next, from_visitor
from tests.browser.site import HTML, ForeignSite
from tests.support import TOK_ALICE, connect_tcp, login, make_config, with_service

pytestmark = pytest.mark.browser

SECRET = "the-shops-signing-secret-0123456789abcdef"
#: The widget's shadow root, from the host page's side.
SHADOW = "[...document.querySelectorAll('body > div')].find(d => d.shadowRoot).shadowRoot"
OPEN = "button[aria-label^='Open chat']"
CLOSE = "button[aria-label='Close chat']"
BADGE = "button[aria-expanded] span"
CHAT = "iframe[title='Open chat']"

#: The company's page: its own button and styles, which the widget must neither change nor take.
SHOP = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>The shop</title>
<style>
  button {{ background: rgb(255, 0, 0) !important; font-size: 40px; border-radius: 0; }}
  span {{ display: none !important; }}
  iframe {{ width: 10px !important; height: 10px !important; }}
</style></head>
<body>
<h1>The shop</h1>
<button id="buy" type="button">Buy</button>
<script src="/before.js"></script>
<script async src="{omni}/widget.js" data-service="25"></script>
</body></html>"""

#: Run before the widget: the names the page's window has of its own.
BEFORE = "window.before = null; window.before = Object.keys(window);"


@asynccontextmanager
async def omni(*allowed: str, secret: bool = False) -> AsyncIterator[RunningServer]:
    def change(body: dict[str, Any]) -> None:
        body["allowed_origins"] = list(allowed)
        if secret:
            body["identity_secret"] = SECRET

    config = with_service(make_config(), 25, change)
    async with open_server(
        config, store=MemoryStore(), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


def shop(site: ForeignSite, srv: RunningServer, host: str = "localhost") -> str:
    """The company's page on ``site`` (as ``host``), embedding ``srv``'s widget."""
    site.serve("/before.js", BEFORE, "text/javascript; charset=utf-8")
    site.serve("/", SHOP.format(omni=srv.http_url), HTML)
    return site.url("/", host=host)


def chat(page: PlaywrightPage) -> FrameLocator:
    return page.frame_locator(CHAT)


async def in_chat(page: Page, action: str, selector: str, *args: Any) -> Any:
    """``locator.<action>(*args)`` on ``selector`` inside the widget's chat."""

    async def run(p: PlaywrightPage) -> Any:
        return await getattr(chat(p).locator(selector), action)(*args)

    return await page.run(run)


async def chat_shows(page: Page, text: str) -> None:
    await page.run(lambda p: chat(p).get_by_text(text).wait_for())


async def test_the_widget_on_an_allowed_site_opens_and_chats_and_leaves_the_site_alone(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    site = f"http://localhost:{foreign_site.port}"
    async with omni(site) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=(1280, 800), locale="en-US")
        assert await page.goto(shop(foreign_site, srv)) == 200
        await page.wait_for(OPEN)
        await page.screenshot("closed-button")

        # No global but `Omni`; the site's styles do not reach the widget, nor its the site.
        added = await page.evaluate(
            "Object.keys(window).filter(k => !window.before.includes(k) && k !== 'before')"
        )
        assert added == ["Omni"]
        buy = "getComputedStyle(document.getElementById('buy'))"
        assert await page.evaluate(f"{buy}.fontSize") == "40px"
        assert await page.evaluate(f"{buy}.backgroundColor") == "rgb(255, 0, 0)"
        widget = f"{SHADOW}.querySelector('button')"
        assert await page.evaluate(f"getComputedStyle({widget}).backgroundColor") != (
            "rgb(255, 0, 0)"
        )
        assert await page.evaluate(f"getComputedStyle({widget}).borderRadius") == "50%"
        serious = [str(v) for v in await page.axe() if v.serious]
        assert not serious, serious  # the button on the site: named, focusable, contrasted

        await page.click(OPEN)
        await in_chat(page, "fill", "#omni-name", "Vera")
        await in_chat(page, "click", "button[type=submit]")
        conversation_id = await accept_next(alice)
        await chat_shows(page, "Hi Vera, Alice here.")
        frame = f"{SHADOW}.querySelector('iframe')"
        size = await page.evaluate(f"[{frame}.offsetWidth, {frame}.offsetHeight]")
        assert size[0] >= 300 and size[1] >= 400, size  # the site's iframe rule did not reach
        await in_chat(page, "fill", "#omni-compose", "Is this in stock?")
        await in_chat(page, "press", "#omni-compose", "Enter")
        assert await from_visitor(alice) == "Is this in stock?"
        await alice.send("message", conversation_id=conversation_id, client_id="a1", text="Yes!")
        await chat_shows(page, "Yes!")
        await page.screenshot("open-chat")
        # The site's own button still works as it did.
        assert await page.evaluate("document.getElementById('buy').textContent") == "Buy"


async def test_the_badge_counts_the_operators_messages_while_the_chat_is_closed(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    site = f"http://localhost:{foreign_site.port}"
    async with omni(site) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=(1280, 800), locale="en-US")
        await page.goto(shop(foreign_site, srv))
        await page.click(OPEN)
        await in_chat(page, "fill", "#omni-name", "Vera")
        await in_chat(page, "click", "button[type=submit]")
        conversation_id = await accept_next(alice)
        await chat_shows(page, "Hi Vera, Alice here.")
        # Seen while open: the greeting is no unread message once the chat closes.
        await page.click(CLOSE)
        badge = f"{SHADOW}.querySelector('span')"
        assert await page.evaluate(f"{badge}.hidden")
        for n in (1, 2):
            await alice.send(
                "message", conversation_id=conversation_id, client_id=f"a{n}", text=f"news {n}"
            )
            await page.wait_for_function(f"{badge}.textContent === '{n}'")
        label = await page.evaluate(f"{SHADOW}.querySelector('button').getAttribute('aria-label')")
        assert label == "Open chat (2)"
        assert not await page.evaluate(f"{badge}.hidden")
        await page.screenshot("badge")

        # The site's next page: the chat comes back by itself, hidden, and counts on: the
        # two from before and a new one, none of those seen before counted again.
        await page.run(lambda p: p.reload())
        await page.wait_for(OPEN)
        await page.wait_for_function(f"{SHADOW}.querySelector('iframe') !== null")
        await page.wait_for_function(f"{badge}.textContent === '2'")
        await alice.send("message", conversation_id=conversation_id, client_id="a3", text="n 3")
        await page.wait_for_function(f"{badge}.textContent === '3'")
        await page.click(OPEN)
        await chat_shows(page, "n 3")
        assert await page.evaluate(f"{badge}.hidden")


async def test_a_site_that_is_not_allowed_cannot_embed_the_chat_nor_talk_to_omni(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    # Only the site's `localhost` origin is allowed; the same server as 127.0.0.1 is not.
    async with omni(f"http://localhost:{foreign_site.port}") as srv:
        page = await browser.new_page(viewport=(1280, 800), locale="en-US")
        await page.goto(shop(foreign_site, srv, host="127.0.0.1"))
        await page.click(OPEN)
        problem = await page.expect_problem(r"frame-ancestors")
        assert f"http://localhost:{foreign_site.port}" in problem.text
        # Nothing of the chat loaded in the frame, and it opened no connection.
        urls = await page.run(lambda p: _frame_urls(p))
        assert not any(u.startswith(srv.http_url) and "/static/" in u for u in urls)
        assert not [r for r in await page.requests() if "/static/webchat/" in r.url]
        assert page.sockets == []
        await page.screenshot("refused")

        # A script of the site's own talking to the websocket is refused by its Origin.
        code = await page.evaluate(
            """async (url) => await new Promise((resolve) => {
                const ws = new WebSocket(url);
                ws.onopen = () => ws.send(JSON.stringify(
                    {type: "start", service_id: 25, visitor: {name: "Eve"}}));
                ws.onmessage = (event) => {
                    const frame = JSON.parse(event.data);
                    if (frame.type === "error") resolve(frame.code);
                };
                ws.onclose = () => resolve("closed");
            })""",
            f"{srv.ws_url}/ws/visitor",
        )
        assert code == "origin_not_allowed"
        assert srv.hub.store.conversations() == []  # type: ignore[attr-defined]


async def _frame_urls(page: PlaywrightPage) -> list[str]:
    return [frame.url for frame in page.frames]


async def test_a_signed_in_customer_is_identified_without_the_form(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    site = f"http://localhost:{foreign_site.port}"
    claims = {"name": "Vera Lopez", "email": "vera@example.com", "service_id": 25}
    token = jwt.encode({"exp": int(time.time()) + 300, **claims}, SECRET, algorithm="HS256")
    async with (
        omni(site, secret=True) as srv,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
    ):
        await login(alice, TOK_ALICE)
        foreign_site.serve(
            "/identify.js",
            f"window.addEventListener('load', () => Omni.identify({token!r}));",
            "text/javascript; charset=utf-8",
        )
        page_html = SHOP.format(omni=srv.http_url).replace(
            "</body>", '<script src="/identify.js"></script></body>'
        )
        foreign_site.serve("/before.js", BEFORE, "text/javascript; charset=utf-8")
        foreign_site.serve("/account", page_html, HTML)
        page = await browser.new_page(viewport=(1280, 800), locale="en-US")
        await page.goto(foreign_site.url("/account", host="localhost"))
        await page.click(OPEN)
        offer = await alice.until("offer")
        assert offer["conversation"]["visitor"]["name"] == "Vera Lopez"
        assert offer["conversation"]["visitor"]["email"] == "vera@example.com"
        await alice.send("accept", conversation_id=offer["conversation"]["id"])
        await chat_shows(page, "Hi Vera Lopez, Alice here.")
        assert await in_chat(page, "count", "#omni-name") == 0
