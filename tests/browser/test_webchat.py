"""The visitor's WebChat in real Chromium, against a real Omni server on 127.0.0.1, with an
operator driven over the websocket protocol.

Each test looks at the page as a visitor would: what it shows (text, not markup), what it sends
and receives, where the focus is, and whether axe finds a serious or critical violation in each
state; screenshots of each state are saved (tests/browser/harness.py says where).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio

from omni.config import Config
from omni.domain.configuration import build_directory
from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.browser.harness import PHONE, Browser, Page
from tests.browser.operator import accept_next, from_visitor
from tests.browser.site import JS, ForeignSite
from tests.support import (
    TOK_ALICE,
    api_token,
    connect_tcp,
    login,
    make_config,
    open_relay,
    start_with,
    with_items,
    with_service,
)
from tests.test_captcha import PASSED, siteverify
from tests.test_captcha import SECRET as CAPTCHA_SECRET

pytestmark = pytest.mark.browser

DESKTOP = (1024, 720)
ADMIN = "admin-pages-Zx8Cv2Bn5Mq9Lw3Kt7Rj"
#: Every message of the visitor's is acknowledged (none shows "sending…").
ALL_SENT = "[...document.querySelectorAll('.omni-mine')].every(e => e.dataset.status === 'sent')"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
XSS = "<img src=x onerror=\"document.title='pwned'\">"


@asynccontextmanager
async def omni(config: Any = None, **server: Any) -> AsyncIterator[RunningServer]:
    """A whole Omni (memory store) on 127.0.0.1: its WebChat on the HTTP port."""
    config = config or make_config(**server)
    async with open_server(
        config, store=MemoryStore(), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


def webchat(srv: RunningServer, service: int = 25) -> str:
    return f"{srv.http_url}/webchat?service={service}"


async def no_serious_violations(page: Page, state: str) -> None:
    violations = await page.axe()
    serious = [str(v) for v in violations if v.serious]
    assert not serious, f"{state}: {serious}"


async def start_from_form(page: Page, name: str = "Vera", email: str = "") -> None:
    await page.wait_for("#omni-name")
    await page.fill("#omni-name", name)
    if email:
        await page.fill("#omni-email", email)
    await page.click("form.omni-form button[type=submit]")


async def messages_shown(page: Page) -> list[str]:
    texts: list[str] = await page.evaluate(
        "[...document.querySelectorAll('.omni-message .omni-text')].map(e => e.textContent)"
    )
    return texts


# -- a whole conversation ---------------------------------------------------------------------


async def test_a_visitor_has_a_whole_conversation_in_the_page(browser: Browser) -> None:
    smtp = {"host": "127.0.0.1", "port": 9, "sender": "chat@example.com", "timeout": 1}
    async with (
        omni(smtp=smtp) as srv,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
    ):
        page = await browser.new_page(viewport=PHONE, locale="pt-BR", timezone="UTC")
        assert await page.goto(webchat(srv)) == 200
        await page.wait_for("#omni-name")
        assert await page.evaluate("document.documentElement.lang") == "pt-BR"
        assert await page.evaluate("document.activeElement.id") == "omni-name"
        await page.screenshot("form")
        await no_serious_violations(page, "form")

        # Nobody is signed in yet: the visitor waits, told their place in the queue.
        await start_from_form(page, "Vera", "vera@example.com")
        await page.wait_for("text=Você é o próximo da fila.")
        await page.screenshot("queued")
        await no_serious_violations(page, "queued")

        await login(alice, TOK_ALICE)
        conversation_id = await accept_next(alice)
        await page.wait_for("text=Hi Vera, Alice here.")
        assert "Você está falando com Alice." in await page.text(".omni-subtitle")
        assert re.fullmatch(r"\d{4}-\d{6}", await page.text(".omni-ticket-number"))
        assert await page.text(".omni-visitor-name") == "Vera"

        # Messages both ways, typing both ways.
        await page.fill("#omni-compose", "Meu pedido atrasou 😟")
        # Typing in the composer tells the operator (once every few seconds, not per key).
        assert (await alice.until("typing"))["author"]["kind"] == "visitor"
        await page.press("#omni-compose", "Enter")
        assert await from_visitor(alice) == "Meu pedido atrasou 😟"
        await page.wait_for_function(
            "document.querySelector('.omni-mine[data-status=sent]') !== null"
        )
        await alice.send("typing", conversation_id=conversation_id)
        await page.wait_for("text=Alice está digitando…")
        await alice.send(
            "message", conversation_id=conversation_id, client_id="a1", text="Vou verificar."
        )
        await page.wait_for("text=Vou verificar.")
        assert await messages_shown(page) == [
            "Hi Vera, Alice here.",
            "Meu pedido atrasou 😟",
            "Vou verificar.",
        ]
        await page.screenshot("active")
        await no_serious_violations(page, "active")

        # The visitor ends it; the default survey, in Portuguese; then the closing page.
        await page.click("button.omni-end")
        await page.screenshot("confirm-end")
        await no_serious_violations(page, "confirm end")
        await page.click("text=Sim, encerrar")
        await page.wait_for("text=Como foi o atendimento?")
        assert (await alice.until("ended"))["by"] == "visitor"
        assert await page.text("legend") == "Como você avalia esta conversa?"
        await page.screenshot("survey")
        await no_serious_violations(page, "survey")
        await page.click("label[for=omni-q-rating-5]")
        await page.click("form.omni-survey button[type=submit]")
        await page.wait_for("text=Conversa encerrada")
        assert await page.text(".omni-closing-message") == "Bye!"

        # The transcript by e-mail, offered because the service sends it and SMTP is set.
        await page.fill("#omni-transcript-email", "vera@example.com")
        await page.click("form.omni-transcript button[type=submit]")
        await page.wait_for("text=Vamos enviá-la para vera@example.com.")
        await page.screenshot("closed")
        await no_serious_violations(page, "closed")
        stored = srv.hub.store.conversations()  # type: ignore[attr-defined]
        assert [c.status.value for c in stored] == ["closed"]
        assert await srv.hub.store.survey(conversation_id) == {"rating": 5}


async def test_the_queue_position_and_the_out_of_hours_page(browser: Browser) -> None:
    # Service 26 opens for half an hour a day, two hours from now (UTC).
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    config = make_config()
    for item in config.items:
        if item.kind == "schedules" and item.key == "never":
            item.body["timezone"] = "UTC"
            item.body["weekly"] = {day: [[f"{opens:%H}:00", f"{opens:%H}:30"]] for day in DAYS}
    config = Config(config.server, config.items, build_directory(config.items))
    async with omni(config) as srv:
        first = await browser.new_page(viewport=PHONE, locale="en-US")
        await first.goto(webchat(srv))
        await start_from_form(first, "Ann")
        await first.wait_for("text=You are next in line.")
        second = await browser.new_page(viewport=PHONE, locale="en-US")
        await second.goto(webchat(srv))
        await start_from_form(second, "Bob")
        await second.wait_for("text=You are number 2 in line.")
        await second.screenshot("queued-second")
        # Ann leaves the queue: Bob moves up.
        await first.click("button.omni-end")
        await first.click("text=Yes, end it")
        await second.wait_for("text=You are next in line.")

        closed = await browser.new_page(viewport=PHONE, locale="pt-BR", timezone="UTC")
        await closed.goto(webchat(srv, 26))
        await start_from_form(closed, "Cid")
        await closed.wait_for("text=We are closed.")
        day = "hoje" if opens.date() == now.date() else "amanhã"
        assert f"Voltamos a atender {day} às {opens:%H}:00." in await closed.text(
            ".omni-closed-notice"
        )
        await closed.fill("#omni-compose", "Por favor, me liguem")
        await closed.press("#omni-compose", "Enter")
        await closed.wait_for_function(
            "document.querySelector('.omni-mine[data-status=sent]') !== null"
        )
        await closed.screenshot("out-of-hours")
        await no_serious_violations(closed, "out of hours")


async def test_the_estimated_wait_is_learnt_from_the_groups_answers(browser: Browser) -> None:
    async with (
        omni() as srv,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as v1,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as v2,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as v3,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
    ):
        # Three visitors wait with nobody signed in: the group has no pace yet.
        for n, visitor in enumerate((v1, v2, v3), 1):
            assert (await start_with(visitor, 25, visitor={"name": f"V{n}"}))["type"] == "started"
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(webchat(srv))
        await start_from_form(page, "Dee")
        await page.wait_for("text=You are number 4 in line.")
        assert "Estimated wait" not in await page.text(".omni-status")
        # Alice answers two of them (three places moved between them): the group has a pace.
        await login(alice, TOK_ALICE)
        # Her two free slots: two offers at once.
        offers = [await alice.until("offer"), await alice.until("offer")]
        for offer in offers:
            await alice.send("accept", conversation_id=offer["conversation"]["id"])
        await page.wait_for("text=You are number 2 in line.")
        for _ in offers:
            await alice.until("assigned")
        # Estimates go out with positions: when Dee next moves up, she is told the wait.
        await v3.send("end")
        await page.wait_for("text=You are next in line.")
        status = await page.text(".omni-status")
        assert re.fullmatch(r"You are next in line\. Estimated wait: [^.]+\.", status), status
        await page.screenshot("estimated-wait")


# -- nothing lost, nothing twice ----------------------------------------------------------------


async def test_a_dropped_connection_and_a_reload_lose_and_repeat_nothing(
    browser: Browser,
) -> None:
    async with open_relay() as relay:
        config = make_config(public_ws_url=relay.url)
        async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
            relay.target = srv.ws_port
            await login(alice, TOK_ALICE)
            page = await browser.new_page(viewport=PHONE, locale="en-US")
            await page.goto(webchat(srv))
            await start_from_form(page, "Vera")
            conversation_id = await accept_next(alice)
            await page.wait_for("text=Hi Vera, Alice here.")
            await page.fill("#omni-compose", "one")
            await page.press("#omni-compose", "Enter")
            assert await from_visitor(alice) == "one"
            await page.wait_for_function(
                "document.querySelector('.omni-mine[data-status=sent]') !== null"
            )

            # The network drops every connection; the page says so and comes back by itself.
            relay.cut()
            await page.wait_for("text=Offline — reconnecting…")
            await page.screenshot("offline")
            relay.restore()
            for n in (2, 3):
                await alice.send(
                    "message", conversation_id=conversation_id, client_id=f"a{n}", text=f"op {n}"
                )
            await page.wait_for("text=op 3")
            await page.fill("#omni-compose", "two")
            await page.press("#omni-compose", "Enter")
            assert await from_visitor(alice) == "two"
            await page.wait_for_function(ALL_SENT)
            expected = ["Hi Vera, Alice here.", "one", "op 2", "op 3", "two"]
            assert await messages_shown(page) == expected

            # A message typed while the connection is down is sent once it is back.
            relay.cut()
            await page.wait_for("text=Offline — reconnecting…")
            await page.fill("#omni-compose", "while offline")
            await page.press("#omni-compose", "Enter")
            await page.wait_for("text=sending…")
            relay.restore()
            assert await from_visitor(alice) == "while offline"
            await page.wait_for_function(ALL_SENT)
            expected.append("while offline")
            assert await messages_shown(page) == expected

            # A reload returns to the same conversation, every message once.
            await page.run(lambda p: p.reload())
            await page.wait_for("text=while offline")
            assert await messages_shown(page) == expected
            await alice.expect_quiet("message")
            stored = [
                e.data["text"]
                for e in srv.hub.store.all_events(conversation_id)  # type: ignore[attr-defined]
                if e.kind == "message"
            ]
            assert stored == expected


# -- text stays text ------------------------------------------------------------------------------


async def test_names_and_messages_that_look_like_html_show_as_text(browser: Browser) -> None:
    config = make_config()
    async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        dialogs: list[str] = []
        await page.run(lambda p: _record_dialogs(p, dialogs))
        await page.goto(webchat(srv))
        await start_from_form(page, XSS, "vera@example.com")
        conversation_id = await accept_next(alice)
        await page.fill("#omni-compose", XSS + "<script>document.title='pwned'</script>")
        await page.press("#omni-compose", "Enter")
        await from_visitor(alice)
        await alice.send(
            "message", conversation_id=conversation_id, client_id="x", text=f"<b>bold</b>{XSS}"
        )
        await page.wait_for_function("document.querySelectorAll('.omni-theirs').length === 2")
        assert await page.text(".omni-visitor-name") == XSS
        texts = await messages_shown(page)
        assert texts[-2] == XSS + "<script>document.title='pwned'</script>"
        assert texts[-1] == f"<b>bold</b>{XSS}"
        assert f"Hi {XSS}, Alice here." in texts[0]
        # Nothing of it became markup, nothing of it ran.
        markup = "document.querySelectorAll(':is(.omni-items, .omni-side) :is(img, b, script)')"
        assert await page.evaluate(f"{markup}.length") == 0
        assert await page.evaluate("document.title") != "pwned"
        assert dialogs == []
        await page.screenshot("html-as-text")


async def _record_dialogs(page: Any, dialogs: list[str]) -> None:
    page.on("dialog", lambda d: dialogs.append(d.message))


# -- keyboard only, at 360 px ----------------------------------------------------------------------


async def test_a_conversation_with_the_keyboard_alone(browser: Browser) -> None:
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=(360, 640), locale="en-US")
        await page.goto(webchat(srv))
        await page.wait_for("#omni-name")
        await page.type("Kim")  # the name field has the focus
        await page.keyboard("Tab", "Tab")  # e-mail, phone (optional)
        await page.keyboard("Tab", "Enter")  # the start button
        conversation_id = await accept_next(alice)
        await page.wait_for("text=Hi Kim, Alice here.")
        assert await page.evaluate("document.activeElement.id") == "omni-compose"
        await page.type("hello")
        await page.keyboard("Enter")
        assert await from_visitor(alice) == "hello"
        # The emoji picker: open it, move with the arrows, pick with Enter.
        await page.keyboard("Shift+Tab", "Enter")
        await page.wait_for_function("document.activeElement.classList.contains('omni-emoji')")
        await page.keyboard("ArrowRight", "Enter")
        assert await page.evaluate("document.activeElement.id") == "omni-compose"
        assert await page.evaluate("document.getElementById('omni-compose').value") == "😁"
        await page.keyboard("Enter")
        assert await from_visitor(alice) == "😁"
        await alice.send("end", conversation_id=conversation_id)
        await page.wait_for("text=How was it?")
        # The survey: Tab to the rating, arrows to choose, Tab to Send.
        await page.keyboard("Tab", "ArrowRight", "ArrowRight", "ArrowRight")
        await page.keyboard("Tab", "Tab", "Enter")
        await page.wait_for("text=Conversation closed")
        assert (await alice.until("closed"))["type"] == "closed"
        await page.screenshot("keyboard-closed")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page scrolls sideways at 360 px ({width} px)"


# -- configuration, live ---------------------------------------------------------------------------


async def test_the_palette_and_language_follow_the_configuration_without_a_restart(
    browser: Browser,
) -> None:
    config = with_service(
        with_items(make_config(), api_token("admin", ADMIN)),
        25,
        lambda body: body.update(language="pt-BR"),
    )
    async with omni(config) as srv:
        page = await browser.new_page(viewport=DESKTOP, locale="en-US")
        await page.goto(webchat(srv))
        await page.wait_for("text=Iniciar conversa")  # the service speaks Portuguese
        assert await page.evaluate("document.documentElement.lang") == "pt-BR"
        await page.screenshot("desktop-form")
        auth = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=srv.http_url, headers=auth) as api:
            parameters = (await api.get("/api/v1/parameters")).json()
            parameters["palette"]["button"] = "#8a1538"
            reply = await api.put("/api/v1/parameters", json=parameters)
            assert reply.status_code == 200, reply.text
        await page.run(lambda p: p.reload())
        await page.wait_for("text=Iniciar conversa")
        colour = await page.evaluate(
            "getComputedStyle(document.querySelector('.omni-primary')).backgroundColor"
        )
        assert colour == "rgb(138, 21, 56)"


# -- the choice of services, and a CAPTCHA ----------------------------------------------------


async def test_the_webchat_without_a_service_offers_the_public_ones(browser: Browser) -> None:
    config = with_service(make_config(), 27, lambda body: body.update(public=False))
    async with omni(config) as srv:
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(f"{srv.http_url}/webchat")
        await page.wait_for("a.omni-service >> nth=0")
        shown = await page.evaluate(
            "[...document.querySelectorAll('a.omni-service')].map(a => [...a.children]"
            ".map(e => e.textContent))"
        )
        assert shown == [  # 27 is not public
            ["Support", "Open now"],
            ["Closed service", "Closed now: leave a message"],
        ]
        await page.screenshot("choose")
        await no_serious_violations(page, "choose")
        await page.click("text=Support")
        await page.wait_for("#omni-name")
        assert await page.evaluate("location.search") == "?service=25"


#: A stand-in for the provider's widget script, with the API the page uses of Turnstile's.
FAKE_TURNSTILE = """
window.turnstile = {
  render(box, options) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fake-captcha";
    button.textContent = "I am human (" + options.sitekey + ")";
    button.addEventListener("click", () => options.callback("token-of-a-passed-challenge"));
    box.append(button);
    return "widget-1";
  },
  reset() {},
};
"""


async def test_a_captcha_from_the_configured_provider_guards_the_start(
    browser: Browser, foreign_site: ForeignSite
) -> None:
    script = foreign_site.serve("/turnstile/v0/api.js", FAKE_TURNSTILE, JS)
    async with siteverify() as provider:
        captcha = {
            "verify_url": provider.url,
            "secret": CAPTCHA_SECRET,
            "timeout": 2,
            "provider": "turnstile",
            "site_key": "site-key-1",
            "script_url": script,
        }
        config = with_service(
            make_config(captcha=captcha), 25, lambda body: body.update(captcha=True)
        )
        async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
            await login(alice, TOK_ALICE)
            page = await browser.new_page(viewport=PHONE, locale="en-US")
            await page.goto(webchat(srv))
            # The provider's script, from the configured URL (the CSP lets that origin in).
            await page.wait_for("text=I am human (site-key-1)")
            await page.fill("#omni-name", "Vera")
            await page.click("form button[type=submit]")
            await page.wait_for("[role=alert]:not([hidden])")
            assert provider.seen == []  # nothing sent without the check done
            await page.click("button.fake-captcha")
            await page.click("form button[type=submit]")
            await accept_next(alice)
            await page.wait_for("text=Hi Vera, Alice here.")
            assert [s["response"] for s in provider.seen] == [PASSED]
            await page.screenshot("after-captcha")


async def test_a_visitor_who_takes_their_time_over_the_form_is_not_cut_off(
    browser: Browser,
) -> None:
    # The server closes a connection that says nothing for `hello_timeout`: the page holds
    # none until the visitor starts, so reading the form slowly shows no "offline".
    config = make_config(limits={"hello_timeout": 1})
    async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(webchat(srv))
        await page.wait_for("#omni-name")
        await trio.sleep(2.5)
        assert page.sockets == []
        assert await page.evaluate("document.querySelector('.omni-banner').hidden")
        await start_from_form(page, "Slow")
        await accept_next(alice)
        await page.wait_for("text=Hi Slow, Alice here.")
        assert len(page.sockets) == 1


async def test_the_form_asks_for_the_fields_the_service_requires(browser: Browser) -> None:
    config = with_service(
        make_config(), 25, lambda body: body.update(required_fields={"email": True})
    )
    async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(webchat(srv))
        await page.wait_for("#omni-name")
        labels = await page.evaluate(
            "[...document.querySelectorAll('.omni-form label')].map(l => l.textContent)"
        )
        assert labels == ["Your name", "E-mail", "Phone (optional)"]
        # Nothing typed: each required field says so, and the focus goes to the first.
        await page.click("form button[type=submit]")
        assert await page.text("#omni-name-error") == "Please fill in this field."
        assert await page.text("#omni-email-error") == "Please fill in this field."
        assert await page.text("#omni-phone-error") == ""
        assert await page.evaluate("document.activeElement.id") == "omni-name"
        await no_serious_violations(page, "form errors")
        await page.screenshot("form-errors")
        await page.fill("#omni-name", "Vera")
        await page.fill("#omni-email", "not an address")
        await page.click("form button[type=submit]")
        assert await page.text("#omni-email-error") != ""
        assert await page.evaluate("document.activeElement.id") == "omni-email"
        await page.fill("#omni-email", "vera@example.com")
        await page.click("form button[type=submit]")
        offer = await alice.until("offer")
        assert offer["conversation"]["visitor"]["email"] == "vera@example.com"


async def test_a_custom_survey_of_every_kind_and_a_service_with_none(browser: Browser) -> None:
    questions = [
        {"id": "stars", "kind": "rating", "label": "Stars?", "min": 1, "max": 5},
        {"id": "nps", "kind": "scale", "label": "Recommend us (0-10)?", "min": 0, "max": 10},
        {"id": "topic", "kind": "choice", "label": "About?", "options": ["Orders", "Billing"]},
        {"id": "note", "kind": "text", "label": "Anything else?", "max_length": 50},
    ]
    config = with_service(
        make_config(),
        25,
        lambda body: body.update(survey="custom", survey_questions=questions),
    )
    async with omni(config) as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(webchat(srv))
        await start_from_form(page, "Vera")
        conversation_id = await accept_next(alice)
        await page.wait_for("text=Hi Vera, Alice here.")
        await alice.send("end", conversation_id=conversation_id)
        await page.wait_for("text=Recommend us (0-10)?")
        assert await page.evaluate("document.querySelectorAll('[name=omni-q-nps]').length") == 11
        assert await page.evaluate("document.getElementById('omni-q-note').maxLength") == 50
        await no_serious_violations(page, "custom survey")
        await page.screenshot("custom-survey")
        await page.click("label[for=omni-q-nps-9]")
        await page.click("text=Billing")
        await page.fill("#omni-q-note", "Fast.")
        await page.click("form.omni-survey button[type=submit]")
        await page.wait_for("text=Conversation closed")
        assert await srv.hub.store.survey(conversation_id) == {
            "nps": 9,
            "topic": "Billing",
            "note": "Fast.",
        }

        # A service with no survey closes straight away, with its closing message.
        other = await browser.new_page(viewport=PHONE, locale="en-US")
        await other.goto(webchat(srv, 27))
        await start_from_form(other, "Will")
        conversation_id = await accept_next(alice)
        await alice.send("end", conversation_id=conversation_id)
        await other.wait_for("text=Conversation closed")
        assert await other.text(".omni-closing-message") == "See you."
        assert await other.evaluate("document.querySelector('form.omni-survey')") is None
