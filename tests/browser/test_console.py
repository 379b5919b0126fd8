"""The operator console (/console) in real Chromium, against a real Omni on 127.0.0.1: operators
sign in with their user name and password, take conversations from visitors on the WebChat
(another browser context: another person), chat, transfer and end — looked at as an operator
would: what the page shows, where the focus is, and what axe finds in each state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from omni.domain.configuration import item_of
from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.browser.harness import Browser, Page
from tests.support import (
    api_token,
    eventually,
    make_config,
    open_relay,
    with_items,
    with_service,
)
from tests.test_channels import FAST, post_wa, wa_body, whatsapp
from tests.webhook_receiver import open_receiver

pytestmark = pytest.mark.browser

ADMIN = "admin-console-tests-Hq3Wz8Lm2Xv"
DESK = (1280, 800)
PHONE = (390, 844)
PASSWORDS = {
    "alice": "green tea at nine, 1",
    "carla": "blue kites over dunes 3",
    "sam": "quiet harbour lights 9",
}
USERS = (
    {"id": "alice", "username": "alice", "name": "Alice", "role": "operator", "operator_id": 1},
    {"id": "carla", "username": "carla", "name": "Carla", "role": "operator", "operator_id": 3},
    {"id": "sam", "username": "sam", "name": "Sam", "role": "supervisor"},
)
XSS = "<img src=x onerror=\"document.title='pwned'\">"


@asynccontextmanager
async def omni(config: Any = None, **server: Any) -> AsyncIterator[RunningServer]:
    """A whole Omni (memory store) with operators who sign in by password."""
    config = with_items(config or make_config(**server), api_token("root", ADMIN))
    async with open_server(
        config, store=MemoryStore(), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=running.http_url, headers=headers) as api:
            for user in USERS:
                password = PASSWORDS[user["id"]]
                reply = await api.post("/api/v1/users", json={**user, "password": password})
                assert reply.status_code == 201, reply.text
        yield running


async def sign_in(page: Page, srv: RunningServer, user: str) -> None:
    await page.goto(f"{srv.http_url}/console")
    await page.fill("#c-username", user)
    await page.fill("#c-password", PASSWORDS[user])
    await page.press("#c-password", "Enter")
    await page.wait_for("#c-status")
    await page.wait_for_function(
        "!document.querySelector('.c-banner') || document.querySelector('.c-banner').hidden"
    )


async def be_available(page: Page) -> None:
    await page.run(lambda p: p.select_option("#c-status", "available"))


async def visitor(browser: Browser, srv: RunningServer, name: str, service: int = 25) -> Page:
    page = await browser.new_page(viewport=PHONE, locale="en-US")
    await page.goto(f"{srv.http_url}/webchat?service={service}")
    await page.fill("#omni-name", name)
    await page.click("form button[type=submit]")
    return page


async def no_serious_violations(page: Page, state: str) -> None:
    serious = [str(v) for v in await page.axe() if v.serious]
    assert not serious, f"{state}: {serious}"


async def messages(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate(
        "[...document.querySelectorAll('.c-message .c-text')].map(e => e.textContent)"
    )
    return texts


async def test_an_operator_signs_in_takes_a_conversation_chats_and_ends_it(
    browser: Browser,
) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await alice.goto(f"{srv.http_url}/console")
        await alice.wait_for("#c-username")
        await alice.screenshot("signin")
        await no_serious_violations(alice, "sign in")
        # A wrong password says so, and keeps the user name.
        await alice.fill("#c-username", "alice")
        await alice.fill("#c-password", "not the password at all")
        await alice.press("#c-password", "Enter")
        await alice.wait_for("text=Wrong user name or password.")
        await sign_in(alice, srv, "alice")
        assert await alice.text(".c-me") == "Alice"
        await be_available(alice)

        vera = await visitor(browser, srv, "Vera")
        await alice.wait_for(".c-offer")
        offer = await alice.text(".c-offer")
        assert "Vera" in offer and "Support" in offer and "s to accept" in offer
        await alice.screenshot("offer")
        await no_serious_violations(alice, "offer")
        await alice.click(".c-accept")
        await alice.wait_for("text=Hi Vera, Alice here.")
        await vera.wait_for("text=Hi Vera, Alice here.")
        assert await alice.evaluate("document.activeElement.id") == "c-compose"
        assert await alice.text(".c-facts") != ""

        await vera.fill("#omni-compose", "Where is my order?")
        await alice.wait_for("text=Vera is typing…")  # typing reaches the console
        await vera.press("#omni-compose", "Enter")
        await alice.wait_for("text=Where is my order?")
        await alice.type("On its way 🚚")
        await vera.wait_for("text=Alice is typing…")  # the console's typing reaches the visitor
        await alice.keyboard("Enter")
        await vera.wait_for("text=On its way 🚚")
        await alice.wait_for_function(
            "[...document.querySelectorAll('.c-mine')].every(e => e.dataset.status === 'sent')"
        )
        assert await messages(alice) == [
            "Hi Vera, Alice here.",
            "Where is my order?",
            "On its way 🚚",
        ]
        await alice.screenshot("chatting")
        await no_serious_violations(alice, "chatting")

        await alice.click("button.c-end")
        await alice.click("text=Yes, end it")
        await alice.wait_for("button.c-dismiss")
        await vera.wait_for("text=The operator ended the conversation.")
        await alice.click("button.c-dismiss")
        await alice.wait_for("text=Choose a conversation.")


async def test_a_reload_and_a_dropped_connection_lose_and_repeat_nothing(
    browser: Browser,
) -> None:
    async with open_relay() as relay, omni(public_ws_url=relay.url) as srv:
        relay.target = srv.ws_port
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        await be_available(alice)
        vera = await visitor(browser, srv, "Vera")
        await alice.click(".c-accept")
        await alice.wait_for("text=Hi Vera, Alice here.")
        await vera.fill("#omni-compose", "one")
        await vera.press("#omni-compose", "Enter")
        await alice.wait_for('text="one"')

        # A reload: still signed in, the conversation back with its history, once.
        await alice.run(lambda p: p.reload())
        await alice.wait_for('text="one"')
        expected = ["Hi Vera, Alice here.", "one"]
        assert await messages(alice) == expected
        assert await alice.evaluate("document.getElementById('c-status').value") == "available"

        # The network drops: the console says so; the visitor writes meanwhile; the console
        # comes back by itself and catches up; what the operator typed offline goes out once.
        relay.cut()
        await alice.wait_for("text=Offline — reconnecting…")
        await alice.screenshot("offline")
        await alice.fill("#c-compose", "typed offline")
        await alice.press("#c-compose", "Enter")
        relay.restore()
        await vera.fill("#omni-compose", "two")
        await vera.press("#omni-compose", "Enter")
        await alice.wait_for('text="two"')
        await vera.wait_for("text=typed offline")
        await alice.wait_for_function(
            "[...document.querySelectorAll('.c-mine')].every(e => e.dataset.status === 'sent')"
        )
        shown = await messages(alice)
        assert sorted(shown) == sorted([*expected, "typed offline", "two"])
        assert len(shown) == len(set(shown))
        stored = [
            e.data["text"]
            for e in srv.hub.store.all_events(  # type: ignore[attr-defined]
                alice_conversation(srv)
            )
            if e.kind == "message"
        ]
        assert sorted(stored) == sorted(shown)


def alice_conversation(srv: RunningServer) -> str:
    (conversation,) = srv.hub.store.conversations()  # type: ignore[attr-defined]
    conversation_id: str = conversation.id
    return conversation_id


async def test_names_messages_and_fields_that_look_like_html_show_as_text(
    browser: Browser,
) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        await be_available(alice)
        vera = await browser.new_page(viewport=PHONE, locale="en-US")
        await vera.goto(f"{srv.http_url}/webchat?service=25")
        await vera.fill("#omni-name", XSS)
        await vera.fill("#omni-email", "vera@example.com")
        await vera.fill("#omni-phone", XSS)
        await vera.click("form button[type=submit]")
        await alice.wait_for(".c-offer")
        await alice.click(".c-accept")
        await alice.wait_for("#c-compose")
        await vera.fill("#omni-compose", f"<script>document.title='pwned'</script>{XSS}")
        await vera.press("#omni-compose", "Enter")
        await alice.wait_for_function("document.querySelectorAll('.c-theirs').length === 1")
        assert await alice.text(".c-conversation-title") == f"{XSS} · 2026-000001"
        assert XSS in await alice.text(".c-facts")
        assert (await messages(alice))[-1] == f"<script>document.title='pwned'</script>{XSS}"
        markup = "document.querySelectorAll('.c-body :is(img, script):not(.omni-emoji-panel *)')"
        assert await alice.evaluate(f"{markup}.length") == 0
        assert await alice.evaluate("document.title") != "pwned"
        await alice.screenshot("html-as-text")


async def test_signing_out_and_deactivation_end_the_consoles_session(browser: Browser) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        saved = await alice.evaluate("JSON.parse(sessionStorage.getItem('omni.console.session'))")
        await alice.click("button.c-signout")
        await alice.wait_for("#c-username")
        # Signed out: the socket is closed, the tab forgot the session, and the server too.
        await eventually(lambda: [s.closed for s in alice.sockets] == [True])
        assert await alice.evaluate("sessionStorage.getItem('omni.console.session')") is None
        headers = {"Authorization": f"Bearer {saved['token']}"}
        async with httpx.AsyncClient(base_url=srv.http_url, headers=headers) as http:
            assert (await http.get("/api/v1/session")).status_code == 401

        # Deactivated by an administrator while signed in: the console says the session is over.
        carla = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(carla, srv, "carla")
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=srv.http_url, headers=headers) as api:
            user = (await api.get("/api/v1/users/carla")).json()
            user["active"] = False
            reply = await api.put("/api/v1/users/carla", json=user)
            assert reply.status_code == 200, reply.text
        await carla.wait_for("text=Your session ended. Please sign in again.")
        await carla.screenshot("session-ended")
        await no_serious_violations(carla, "session ended")


async def test_two_conversations_at_once_with_unread_counts_then_the_history(
    browser: Browser,
) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        await be_available(alice)  # capacity 2
        vera = await visitor(browser, srv, "Vera")
        await alice.click(".c-accept")
        await alice.wait_for("text=Hi Vera, Alice here.")
        will = await visitor(browser, srv, "Will")
        await alice.click(".c-accept")
        await alice.wait_for("text=Hi Will, Alice here.")  # the one just taken is open
        # Vera writes while Will's conversation is open: her line counts one unread.
        await vera.fill("#omni-compose", "hello?")
        await vera.press("#omni-compose", "Enter")
        vera_item = ".c-chat[data-id] >> nth=0"
        await alice.wait_for_function(
            "document.querySelector('.c-chat .c-badge:not([hidden])')?.textContent === '1'"
        )
        assert await alice.evaluate("document.title") == "(1) Omni console"
        await alice.screenshot("two-conversations")
        await no_serious_violations(alice, "two conversations")
        await alice.click(vera_item)
        await alice.wait_for("text=hello?")
        await alice.wait_for_function("document.querySelector('.c-badge:not([hidden])') === null")
        assert await alice.evaluate("document.title") == "Omni console"
        # Both end; the history finds them, and shows a transcript read-only.
        for page in (vera, will):
            await page.click("button.omni-end")
            await page.click("text=Yes, end it")
            await page.click("text=Skip")
            await page.wait_for("text=Conversation closed")
        await alice.click("#c-tab-history")
        await alice.fill("#c-search", "Vera")
        await alice.press("#c-search", "Enter")
        await alice.wait_for(".c-history-list .c-chat")
        assert "Vera" in await alice.text(".c-history-list")
        assert "Will" not in await alice.text(".c-history-list")
        await alice.click(".c-history-list .c-chat")
        await alice.wait_for(".c-transcript h3")
        lines = await alice.evaluate(
            "[...document.querySelectorAll('.c-transcript-lines .c-text')].map(e => e.textContent)"
        )
        assert lines == ["Hi Vera, Alice here.", "hello?"]
        assert (
            await alice.evaluate("document.querySelectorAll('.c-transcript textarea').length") == 0
        )
        await alice.screenshot("history")
        await no_serious_violations(alice, "history")


async def test_the_out_of_hours_folder_and_contacting_the_visitor(browser: Browser) -> None:
    # The closed service is served by Carla's group (its schedule keeps it closed).
    config = with_service(make_config(), 26, lambda body: body.update(links=[{"group": 1}]))
    async with omni(config) as srv:
        carla = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(carla, srv, "carla")
        await carla.click("#c-tab-folder")
        await carla.wait_for("text=No conversation waits out of hours.")
        # A visitor arrives while the service is closed: the folder shows her at once (pushed).
        olga = await visitor(browser, srv, "Olga", service=26)
        await olga.wait_for("text=We are closed.")
        await olga.fill("#omni-compose", "Call me back please")
        await olga.press("#omni-compose", "Enter")
        await olga.wait_for_function(
            "document.querySelector('.omni-mine[data-status=sent]') !== null"
        )
        await carla.wait_for(".c-folder-item")
        assert "Olga" in await carla.text(".c-folder-item")
        assert await carla.text("#c-tab-folder") == "Out of hours (1)"
        await carla.screenshot("folder")
        await no_serious_violations(carla, "folder")
        await carla.click(".c-folder-item .c-resume")
        await carla.wait_for("text=Call me back please")
        await olga.wait_for("text=You are talking to Carla.")
        await carla.wait_for_function("document.querySelector('.c-folder-item') === null")


async def tab_to(page: Page, selector: str, most: int = 15) -> None:
    """Press Tab until ``selector`` has the focus (at most ``most`` times)."""
    for _ in range(most):
        if await page.evaluate(f"document.activeElement.matches({selector!r})"):
            return
        await page.keyboard("Tab")
    raise AssertionError(f"{selector} not reached with Tab")


async def test_the_console_with_the_keyboard_alone_in_portuguese(browser: Browser) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="pt-BR")
        await alice.goto(f"{srv.http_url}/console")
        await alice.wait_for("text=Usuário")
        assert await alice.evaluate("document.activeElement.id") == "c-username"
        await alice.type("alice")
        await alice.keyboard("Tab")
        await alice.type(PASSWORDS["alice"])
        await alice.keyboard("Enter")
        await alice.wait_for("#c-status")
        await tab_to(alice, "#c-status")
        await alice.keyboard("ArrowUp")  # Em pausa → Disponível
        await alice.wait_for_function("document.getElementById('c-status').value === 'available'")
        vera = await visitor(browser, srv, "Vera")
        await alice.wait_for("text=Chegando")  # announced: a live region says who
        assert "Vera" in await alice.text(".c-sr")
        await tab_to(alice, ".c-accept")
        await alice.keyboard("Enter")
        await alice.wait_for("text=Hi Vera, Alice here.")
        assert await alice.evaluate("document.activeElement.id") == "c-compose"
        await alice.type("Olá!")
        await alice.keyboard("Enter")
        await vera.wait_for("text=Olá!")
        # The emoji picker from the keyboard: Shift+Tab past the file button to it, arrows, Enter.
        await alice.keyboard("Shift+Tab", "Shift+Tab", "Enter")
        await alice.wait_for_function("document.activeElement.classList.contains('omni-emoji')")
        await alice.keyboard("ArrowRight", "Enter")
        assert await alice.evaluate("document.activeElement.id") == "c-compose"
        await alice.keyboard("Enter")
        await vera.wait_for("text=😁")
        await tab_to(alice, "button.c-end")
        await alice.keyboard("Enter")
        assert await alice.evaluate("document.activeElement.textContent") == "Não"
        await alice.keyboard("Shift+Tab", "Enter")  # Sim, encerrar
        await alice.wait_for("button.c-dismiss")
        await alice.screenshot("keyboard-pt-BR")
        await no_serious_violations(alice, "ended")


async def board_row(page: Page, kind: str, key: int) -> str:
    return await page.text(f"tr[data-{kind}='{key}']")


async def test_two_consoles_and_the_supervisors_live_view(browser: Browser) -> None:
    async with omni() as srv:
        sam = await browser.new_page(viewport=DESK, locale="en-US")
        await sam.goto(f"{srv.http_url}/supervisor")
        await sam.fill("#c-username", "sam")
        await sam.fill("#c-password", PASSWORDS["sam"])
        await sam.press("#c-password", "Enter")
        await sam.wait_for("tr[data-group='1']")
        assert "Sam" in await sam.text(".c-me")
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        carla = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(carla, srv, "carla")
        await sign_in(alice, srv, "alice")
        # Carla became available first: she has been idle longest, and gets the offer.
        await be_available(carla)
        await sam.wait_for_function(
            "document.querySelector(\"tr[data-operator='3'] .s-state\").textContent === 'Available'"
        )
        await be_available(alice)
        vera = await visitor(browser, srv, "Vera")
        await carla.wait_for(".c-offer")
        assert await alice.evaluate("document.querySelector('.c-offer')") is None
        await sam.wait_for_function(
            "document.querySelector(\"tr[data-group='1'] .s-waiting\").textContent === '1'"
        )
        await sam.screenshot("waiting")
        await carla.click(".c-accept")
        await carla.wait_for("text=Hi Vera, Carla here.")
        await sam.wait_for_function(
            "document.querySelector(\"tr[data-operator='3'] .s-state\").textContent === 'Busy'"
        )
        assert "1/1" in await board_row(sam, "operator", 3)
        await vera.fill("#omni-compose", "I need billing")
        await vera.press("#omni-compose", "Enter")
        await carla.wait_for("text=I need billing")

        # Carla transfers to Alice by name: the list shows operators with room.
        await carla.click("button.c-transfer")
        await carla.wait_for(".c-targets")
        await carla.screenshot("transfer")
        await no_serious_violations(carla, "transfer")
        await carla.click(".c-targets >> text=Alice")
        await alice.wait_for("text=I need billing")  # the history came along
        await vera.wait_for("text=You are talking to Alice.")
        await carla.wait_for("button.c-dismiss")
        await sam.wait_for_function(
            "document.querySelector(\"tr[data-operator='1']\").textContent.includes('1/2')"
        )
        await alice.fill("#c-compose", "Alice from billing here")
        await alice.press("#c-compose", "Enter")
        await vera.wait_for("text=Alice from billing here")

        # The supervisor moves it back to Carla from the live view.
        await sam.wait_for("tr[data-conversation]")
        await sam.run(
            lambda p: p.select_option("tr[data-conversation] select >> nth=0", label="Carla")
        )
        await sam.click("tr[data-conversation] .s-assign")
        await sam.wait_for("text=Moved.")
        await carla.wait_for("text=Alice from billing here")
        await vera.wait_for("text=You are talking to Carla.")
        await sam.screenshot("live-view")
        await no_serious_violations(sam, "live view")

        await carla.click("button.c-end")
        await carla.click("text=Yes, end it")
        await sam.wait_for_function(
            "document.querySelector(\"tr[data-group='1']\").textContent.includes('100%')"
        )


async def test_signing_in_is_throttled(browser: Browser) -> None:
    async with omni(limits={"failures_before_wait": 2, "failure_wait": 60}) as srv:
        page = await browser.new_page(viewport=DESK, locale="en-US")
        await page.goto(f"{srv.http_url}/console")
        for _ in range(3):  # two failures are free; the third starts a wait
            await page.fill("#c-username", "alice")
            await page.fill("#c-password", "a wrong password again")
            await page.press("#c-password", "Enter")
            await page.wait_for("text=Wrong user name or password.")
            await page.evaluate("document.querySelector('.c-error').textContent = ''")
        await page.fill("#c-password", PASSWORDS["alice"])  # right, but too soon
        await page.press("#c-password", "Enter")
        await page.wait_for("text=/Too many attempts. Try again in \\d+ s\\./")
        assert await page.evaluate("document.getElementById('c-status')") is None
        await page.screenshot("throttled")
        await no_serious_violations(page, "throttled")


async def test_a_pause_reason_shows_on_the_live_view(browser: Browser) -> None:
    async with omni() as srv:
        sam = await browser.new_page(viewport=DESK, locale="pt-BR")
        await sam.goto(f"{srv.http_url}/supervisor")
        await sam.fill("#c-username", "sam")
        await sam.fill("#c-password", PASSWORDS["sam"])
        await sam.press("#c-password", "Enter")
        await sam.wait_for("tr[data-operator='3']")
        carla = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(carla, srv, "carla")
        await carla.run(lambda p: p.select_option("#c-reason", "lunch"))
        await carla.wait_for_function("document.getElementById('c-reason').value === 'lunch'")
        await sam.wait_for("text=Em pausa: Lunch")
        await sam.screenshot("paused-for-lunch")
        await no_serious_violations(sam, "live view in Portuguese")


async def test_the_operator_changes_their_password_and_keeps_working(browser: Browser) -> None:
    async with omni() as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        async with httpx.AsyncClient(base_url=srv.http_url) as http:  # another session of hers
            reply = await http.post(
                "/api/v1/session", json={"username": "alice", "password": PASSWORDS["alice"]}
            )
            other = {"Authorization": f"Bearer {reply.json()['token']}"}
            assert (await http.get("/api/v1/session", headers=other)).status_code == 200
        await be_available(alice)
        vera = await visitor(browser, srv, "Vera")
        await alice.click(".c-accept")
        await alice.wait_for("text=Hi Vera, Alice here.")
        await alice.click("button.c-password")
        await alice.fill("#c-old-password", "not it at all, sorry")
        await alice.fill("#c-new-password", "a brand new passphrase 2")
        await alice.fill("#c-repeat-password", "a brand new passphrase 2")
        await alice.press("#c-repeat-password", "Enter")
        await alice.wait_for("text=The current password is wrong.")
        await no_serious_violations(alice, "password dialog")
        await alice.fill("#c-old-password", PASSWORDS["alice"])
        await alice.press("#c-repeat-password", "Enter")
        await alice.wait_for_function("document.querySelector('.c-password-box') === null")
        # This console goes on with a new session, the conversation still there, once; the
        # other session ended.
        async with httpx.AsyncClient(base_url=srv.http_url) as http:
            assert (await http.get("/api/v1/session", headers=other)).status_code == 401
        await vera.fill("#omni-compose", "still there?")
        await vera.press("#omni-compose", "Enter")
        await alice.wait_for("text=still there?")
        assert await messages(alice) == ["Hi Vera, Alice here.", "still there?"]
        notices = await alice.evaluate(
            "[...document.querySelectorAll('.c-notice')].map(e => e.textContent)"
        )
        assert notices == ["Alice took the conversation."]
        await alice.fill("#c-compose", "yes")
        await alice.press("#c-compose", "Enter")
        await vera.wait_for("text=yes")


def png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 60)).save(out, "PNG")
    return out.getvalue()


PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


async def test_files_both_ways_with_a_thumbnail_and_a_refusal(browser: Browser) -> None:
    files = {"enabled": True, "types": ["image/png", "application/pdf"]}
    config = with_service(make_config(), 25, lambda body: body.update(attachments=files))
    async with omni(config) as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        await be_available(alice)
        vera = await visitor(browser, srv, "Vera")
        await alice.click(".c-accept")
        await vera.wait_for("text=Hi Vera, Alice here.")
        # The visitor attaches a picture: the operator sees it as a thumbnail.
        picture = {"name": "photo.png", "mimeType": "image/png", "buffer": png_bytes()}
        await vera.run(lambda p: p.set_input_files(".omni-file-input", picture))
        await alice.wait_for(".c-theirs img.omni-thumbnail")
        await alice.wait_for_function(
            "document.querySelector('.c-theirs img.omni-thumbnail').naturalWidth === 64"
        )
        await vera.wait_for_function(
            "document.querySelector('.omni-mine .omni-thumbnail') !== null && "
            "document.querySelector('.omni-mine').dataset.status === 'sent'"
        )
        # The operator sends a PDF: the visitor gets a link with its name and size.
        document = {"name": "invoice.pdf", "mimeType": "application/pdf", "buffer": PDF}
        await alice.run(lambda p: p.set_input_files("#c-main .omni-file-input", document))
        await vera.wait_for(".omni-theirs a.omni-file")
        assert "invoice.pdf" in await vera.text(".omni-theirs a.omni-file")
        # An HTML page named .png is refused, and says why.
        fake = {"name": "cat.png", "mimeType": "image/png", "buffer": b"<html><script>x</script>"}
        await vera.run(lambda p: p.set_input_files(".omni-file-input", fake))
        await vera.wait_for("text=this kind of file is not accepted")
        await vera.screenshot("files-visitor")
        await alice.screenshot("files-console")
        await no_serious_violations(vera, "files")
        await no_serious_violations(alice, "files")
        conversation_id = alice_conversation(srv)
        stored = [
            e.data.get("attachment", {}).get("name")
            for e in srv.hub.store.all_events(conversation_id)  # type: ignore[attr-defined]
            if e.kind == "message" and "attachment" in e.data
        ]
        assert stored == ["photo.png", "invoice.pdf"]


#: Drop (or paste) the PNG given in base64 on ``selector`` as a user would with a file.
GIVE_FILE = """([selector, kind, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], kind + ".png", {type: "image/png"}));
  const target = document.querySelector(selector);
  const event = kind === "paste"
    ? new ClipboardEvent("paste", {clipboardData: transfer, bubbles: true, cancelable: true})
    : new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true});
  target.dispatchEvent(event);
}"""


async def test_files_dropped_and_pasted_in_both_pages(browser: Browser) -> None:
    import base64

    files = {"enabled": True, "types": ["image/png"]}
    config = with_service(make_config(), 25, lambda body: body.update(attachments=files))
    data = base64.b64encode(png_bytes()).decode()
    async with omni(config) as srv:
        alice = await browser.new_page(viewport=DESK, locale="en-US")
        await sign_in(alice, srv, "alice")
        await be_available(alice)
        vera = await visitor(browser, srv, "Vera")
        await alice.click(".c-accept")
        await vera.wait_for("text=Hi Vera, Alice here.")
        await vera.evaluate(GIVE_FILE, [".omni-log", "drop", data])
        await vera.evaluate(GIVE_FILE, ["#omni-compose", "paste", data])
        await alice.evaluate(GIVE_FILE, [".c-log", "drop", data])
        await alice.evaluate(GIVE_FILE, ["#c-compose", "paste", data])
        names = "[...document.querySelectorAll('a.omni-file')].map(a => a.textContent)"
        await alice.wait_for_function(f"{names}.length === 4")
        await vera.wait_for_function(f"{names}.length === 4")
        shown = await alice.evaluate(names)
        assert sorted(n.split(" (")[0] for n in shown) == [
            "📎 drop.png",
            "📎 drop.png",
            "📎 paste.png",
            "📎 paste.png",
        ]


async def test_a_whatsapp_conversation_shows_its_channel(browser: Browser) -> None:
    """Issue 17: a conversation that came through WhatsApp (the platform's webhook POSTed to
    the server, its replies to a stand-in) shows the channel's label beside the visitor's name
    in the offer and the chat list, and a Channel row in the visitor panel; axe finds nothing;
    at 360 px the stacked console is no wider than the screen."""
    async with open_receiver() as platform:
        channel = whatsapp(f"http://127.0.0.1:{platform.port}")
        config = with_items(make_config(webhooks=FAST), item_of("channels", channel))
        async with omni(config) as srv, httpx.AsyncClient(base_url=srv.http_url) as http:
            alice = await browser.new_page(viewport=DESK, locale="en-US")
            await sign_in(alice, srv, "alice")
            await be_available(alice)
            message = wa_body("wamid.B1", "Meu pedido não chegou")
            assert (await post_wa(http, message)).status_code == 200
            await alice.wait_for(".c-offer .c-channel")
            assert await alice.text(".c-offer .c-channel") == "WhatsApp"
            assert "Paula" in await alice.text(".c-offer")
            await alice.screenshot("whatsapp-offer")
            await no_serious_violations(alice, "a WhatsApp offer")
            await alice.click(".c-accept")
            await alice.wait_for("text=Meu pedido não chegou")
            await alice.wait_for(".c-chat .c-channel")
            assert await alice.text(".c-chat .c-chat-name") == "PaulaWhatsApp"
            facts = await alice.evaluate(
                "Object.fromEntries([...document.querySelectorAll('.c-facts > div')]"
                ".map(d => [d.querySelector('dt').textContent, d.querySelector('dd').textContent]))"
            )
            assert facts["Channel"] == "WhatsApp" and facts["Phone"] == "+5511987654321"
            await alice.type("Vou verificar agora")
            await alice.keyboard("Enter")
            await platform.wait_for(2)  # the greeting and Alice's reply reached the platform
            assert platform.delivered()[-1].json["text"]["body"] == "Vou verificar agora"
            await alice.screenshot("whatsapp")
            violations = [str(v) for v in await alice.axe()]
            assert violations == [], violations
            await alice.run(lambda p: p.set_viewport_size({"width": 360, "height": 740}))
            await alice.wait_for_function("document.documentElement.scrollWidth <= 360")
            await alice.screenshot("whatsapp-360px")
            assert await alice.text(".c-chat .c-channel") == "WhatsApp"
            await no_serious_violations(alice, "a WhatsApp conversation at 360 px")
