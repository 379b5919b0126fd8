"""The chatbot (issue 16, F15) in the pages, in real Chromium against a real Omni on 127.0.0.1:
a visitor on the WebChat of service 28 talks to its bot "triage" (tests/test_bot.py's script)
and is handed to a group, and an operator on the console takes the conversation with what the
bot said and collected.

Service 28 links group 1 (always open) and group 3, whose link keeps a schedule that opens two
hours from now for half an hour a day: the bot's "A bill" hands off to a closed group.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest

from omni.config import Config
from omni.domain.bot import Bot
from omni.domain.configuration import item_of
from omni.domain.model import Service
from omni.domain.schedule import Schedule
from omni.server import RunningServer
from tests.browser.harness import PHONE, Browser, Page
from tests.browser.test_console import be_available, omni, sign_in
from tests.support import make_config, open_relay, with_items
from tests.test_bot import SHOP, TRIAGE

pytestmark = pytest.mark.browser

DESK = (1280, 800)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MENU = 'role=group[name="What do you need?"]'
MENU_LABELS = ["Buy something", "A bill", "Nothing, thanks", "Talk to a person"]
#: The texts of the log's bubbles (the bot's, the visitor's, the operator's), in order.
BUBBLES = "[...document.querySelectorAll('.omni-message .omni-text')].map(e => e.textContent)"
#: The labels of the bot's option buttons a visitor can see, in order.
VISIBLE_OPTIONS = (
    "[...document.querySelectorAll('.omni-bot-option')]"
    ".filter(b => b.checkVisibility()).map(b => b.textContent)"
)
#: Whether each of the bot's groups of options shows, in order.
SHOWN_GROUPS = "[...document.querySelectorAll('.omni-bot-options')].map(g => !g.hidden)"


def shop_config(**server: Any) -> tuple[Config, datetime]:
    """The shop with its bot, files accepted, and group 3 closed until the instant returned."""
    now = datetime.now(UTC)
    opens = (now + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    later = {
        "id": "later",
        "timezone": "UTC",
        "weekly": {day: [[f"{opens:%H}:00", f"{opens:%H}:30"]] for day in DAYS},
    }
    shop = {
        **SHOP,
        "links": [{"group": 1}, {"group": 3, "schedule": "later"}],
        "attachments": {"enabled": True, "types": ["image/png"]},
    }
    config = with_items(
        make_config(**server),
        item_of("schedules", msgspec.convert(later, Schedule)),
        item_of("bots", msgspec.convert(TRIAGE, Bot)),
        item_of("services", msgspec.convert(shop, Service)),
    )
    return config, opens


def webchat(srv: RunningServer) -> str:
    return f"{srv.http_url}/webchat?service=28"


async def start(page: Page, srv: RunningServer, name: str = "Vera") -> None:
    await page.goto(webchat(srv))
    await page.wait_for("#omni-name")
    await page.fill("#omni-name", name)
    await page.click("form.omni-form button[type=submit]")


async def no_violations(page: Page, state: str) -> None:
    violations = [str(v) for v in await page.axe()]
    assert not violations, f"{state}: {violations}"


async def sent(page: Page, kind: str) -> list[dict[str, Any]]:
    return [f.json() for f in page.frames if f.direction == "sent" and f.type == kind]


async def composer(page: Page) -> dict[str, Any]:
    """How the composer asks for an answer now."""
    shown: dict[str, Any] = await page.evaluate(
        """() => {
          const c = document.getElementById('omni-compose');
          return {placeholder: c.placeholder, label: c.getAttribute('aria-label'),
                  mode: c.getAttribute('inputmode'), autocomplete: c.getAttribute('autocomplete')};
        }"""
    )
    return shown


async def test_a_visitor_answers_the_bot_and_the_operator_sees_what_it_collected(
    browser: Browser,
) -> None:
    async with open_relay() as relay:
        config, _ = shop_config(public_ws_url=relay.url)
        async with omni(config) as srv:
            relay.target = srv.ws_port
            vera = await browser.new_page(viewport=PHONE, locale="en-US")
            await start(vera, srv)
            await vera.wait_for("text=Hi! I am the shop's assistant.")
            await vera.wait_for(MENU)
            # The menu: real buttons in a group named by the question, "talk to a person" last.
            assert await vera.evaluate(VISIBLE_OPTIONS) == MENU_LABELS
            tags = "[...document.querySelectorAll('.omni-bot-option')].map(b => b.tagName)"
            assert set(await vera.evaluate(tags)) == {"BUTTON"}
            bot_bubble = ".omni-bot[data-node=hello]"
            assert await vera.text(f"{bot_bubble} .omni-author") == "Shop"  # the service speaks
            assert await vera.text(".omni-subtitle") == "Automated assistant"
            # No files and no typing for the bot; the End button is there.
            assert await vera.evaluate("document.querySelector('.omni-attach').hidden") is True
            assert await vera.evaluate("document.querySelector('.omni-end').hidden") is False
            assert await vera.evaluate("document.querySelector('.omni-status').textContent") == ""
            width = await vera.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE[0], f"the page scrolls sideways at 360 px ({width} px)"
            await vera.screenshot("bot-menu-360")
            await no_violations(vera, "the bot's menu")

            # The keyboard picks an option; it shows as the visitor's bubble.
            await vera.press('role=button[name="Buy something"]', "Enter")
            reply = (await vera.wait_for_frame("bot_reply", direction="sent")).json()
            assert reply == {"type": "bot_reply", "client_id": reply["client_id"], "option": "buy"}
            await vera.wait_for("text=Your e-mail, please?")
            assert await vera.evaluate("document.activeElement.id") == "omni-compose"
            assert await vera.text(".omni-mine .omni-author") == "You"
            assert await vera.text(".omni-mine .omni-text") == "Buy something"
            # The menu's buttons are gone; the question's own ("talk to a person") are there.
            assert await vera.evaluate(VISIBLE_OPTIONS) == ["Talk to a person"]
            assert await composer(vera) == {
                "placeholder": "Your e-mail address",
                "label": "Your e-mail address",
                "mode": "email",
                "autocomplete": "email",
            }

            # A bad e-mail: the bot says so and asks again.
            await vera.fill("#omni-compose", "vera at example")
            await vera.press("#omni-compose", "Enter")
            await vera.wait_for("text=That is not an e-mail address.")
            typed = [f for f in await sent(vera, "bot_reply") if "text" in f]
            assert [f["text"] for f in typed] == ["vera at example"]
            # The menu's, the first question's, the question asked again: only the last shows.
            assert await vera.evaluate(SHOWN_GROUPS) == [False, False, True]
            assert await vera.evaluate(VISIBLE_OPTIONS) == ["Talk to a person"]

            # The good one typed while the network is down: pending, kept across a reload,
            # sent once it is back — under the client_id it was given when typed.
            relay.cut()
            await vera.wait_for("text=Offline — reconnecting…")
            await vera.fill("#omni-compose", "vera@example.com")
            await vera.press("#omni-compose", "Enter")
            await vera.wait_for(".omni-mine[data-status=sending]")
            stored = json.loads(await vera.evaluate("localStorage.getItem('omni.webchat.28')"))
            ((client_id, pending),) = stored["pending"]
            assert pending == {"bot": {"text": "vera@example.com"}, "label": "vera@example.com"}
            await vera.run(lambda p: p.reload())
            relay.restore()
            await vera.wait_for("text=Passing you to Sales.")
            await vera.wait_for("text=You are next in line.")  # the queue takes over
            good = [
                f for f in await sent(vera, "bot_reply") if f.get("text") == pending["bot"]["text"]
            ]
            assert good == [
                {"type": "bot_reply", "client_id": client_id, "text": "vera@example.com"}
            ]
            # The replay after the reload: the bot's history in order, each once.
            history = [
                "Hi! I am the shop's assistant.",
                "What do you need?",
                "Buy something",
                "Your e-mail, please?",
                "vera at example",
                "That is not an e-mail address.",
                "vera@example.com",
                "Passing you to Sales.",
            ]
            assert await vera.evaluate(BUBBLES) == history
            assert await vera.evaluate(VISIBLE_OPTIONS) == []  # the bot is done
            assert await vera.text(".omni-subtitle") == ""
            assert await composer(vera) == {
                "placeholder": "Your message",
                "label": "Your message",
                "mode": None,
                "autocomplete": None,
            }
            # Typed into the composer three times, and not one typing frame while in `bot`.
            assert await sent(vera, "typing") == []
            assert await vera.evaluate("document.querySelector('.omni-attach').hidden") is False
            await vera.screenshot("bot-handed-off-360")

            # Alice signs in and takes it: the history shows what the bot said and what Vera
            # answered.
            alice = await browser.new_page(viewport=DESK, locale="en-US")
            await sign_in(alice, srv, "alice")
            await be_available(alice)
            await alice.wait_for(".c-offer")
            await alice.click(".c-accept")
            await vera.wait_for("text=Alice joined the conversation.")
            await alice.wait_for(".c-message >> text=Passing you to Sales.")
            operator_sees = await alice.evaluate(
                "[...document.querySelectorAll('.c-message:not(.c-mine)')].map(e => "
                "[e.classList.contains('c-bot') ? 'bot' : 'visitor', "
                "e.querySelector('.c-author').textContent, e.querySelector('.c-text').textContent])"
            )
            bot, you = ("bot", "Assistant (bot)"), ("visitor", "Vera")
            kinds = [bot, bot, you, bot, you, bot, you, bot]
            assert operator_sees == [
                [*kind, text] for kind, text in zip(kinds, history, strict=True)
            ]
            options = await alice.text(".c-bot .c-bot-options")
            assert options == "Options: " + " · ".join(MENU_LABELS)
            # The visitor panel: the e-mail the bot collected, once.
            facts = await alice.evaluate(
                "[...document.querySelectorAll('.c-facts > div')].map(d => "
                "[d.querySelector('dt').textContent, d.querySelector('dd').textContent])"
            )
            assert ["E-mail", "vera@example.com"] in facts
            assert [value for _, value in facts].count("vera@example.com") == 1
            await alice.screenshot("bot-history-console")
            serious = [str(v) for v in await alice.axe() if v.serious]
            assert not serious, serious

            # From here on a person answers: typing is told again.
            await vera.fill("#omni-compose", "Hello Alice")
            await vera.wait_for_frame("typing", direction="sent")


async def test_a_hand_off_to_a_closed_group_says_when_it_opens_and_asks_again(
    browser: Browser,
) -> None:
    config, opens = shop_config()
    zone = ZoneInfo("America/Sao_Paulo")
    async with omni(config) as srv:
        vera = await browser.new_page(viewport=PHONE, locale="pt-BR", timezone=zone.key)
        await start(vera, srv)
        await vera.wait_for(MENU)
        assert await vera.text(".omni-subtitle") == "Assistente automático"
        await vera.click('role=button[name="A bill"]')
        await vera.wait_for("text=Billing is closed now.")
        await vera.wait_for_function(
            "document.querySelectorAll('.omni-bot[data-node=menu]').length === 2"
        )
        # When the group opens, in the visitor's language and time zone.
        local = opens.astimezone(zone)
        day = "hoje" if local.date() == datetime.now(zone).date() else "amanhã"
        expected = f"Volta a atender {day} às {local:%H}:00."
        assert await vera.text(".omni-bot[data-node=billing] .omni-opens") == expected
        # The menu again: only the newest question's buttons.
        assert await vera.evaluate(VISIBLE_OPTIONS) == MENU_LABELS
        assert await vera.evaluate(SHOWN_GROUPS) == [False, True]
        shown = [
            "Hi! I am the shop's assistant.",
            "What do you need?",
            "A bill",
            "Billing is closed now.",
            "What do you need?",
        ]
        assert await vera.evaluate(BUBBLES) == shown
        await vera.screenshot("bot-group-closed-360")
        await no_violations(vera, "a closed group")
        await vera.run(lambda p: p.set_viewport_size({"width": DESK[0], "height": DESK[1]}))
        await vera.screenshot("bot-group-closed-desktop")

        # A reload: the same, once each, the opening time too, the buttons where they were.
        await vera.run(lambda p: p.reload())
        await vera.wait_for(MENU)
        assert await vera.evaluate(BUBBLES) == shown
        assert await vera.text(".omni-bot[data-node=billing] .omni-opens") == expected
        assert await vera.evaluate(VISIBLE_OPTIONS) == MENU_LABELS
        assert await vera.evaluate(SHOWN_GROUPS) == [False, True]

        # The visitor needs nothing after all: the bot says goodbye and the chat closes.
        await vera.click('role=button[name="Nothing, thanks"]')
        await vera.wait_for("text=Goodbye!")
        await vera.wait_for("text=O assistente encerrou a conversa.")
        await vera.wait_for("text=Conversa encerrada")
        assert await vera.text(".omni-closing-message") == "Thanks for visiting."
        # No operator answered: nothing to e-mail.
        assert await vera.evaluate("document.querySelector('.omni-transcript')") is None
        await vera.screenshot("bot-ended-360")
        await no_violations(vera, "ended by the bot")
