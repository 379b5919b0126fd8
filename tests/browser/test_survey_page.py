"""The survey page of a link (``/survey/{token}``) in real Chromium, against a real Omni server
on 127.0.0.1: the visitor of a conversation (driven over the websocket protocol, as a messaging
channel's would be) opens the link the admin API gives for it.

Each test looks at the page as that visitor would: what it says, in their language, where the
focus goes, that it works with the keyboard alone and at 360 px, and that axe finds no
violation in any state; screenshots of each state are saved (tests/browser/harness.py says
where).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest

from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.browser.harness import PHONE, Browser, Page
from tests.support import TOK_ALICE, Client, connect_tcp, login
from tests.test_survey_link import AUTH, end_conversation, survey_config

pytestmark = pytest.mark.browser

DESKTOP = (1024, 720)
#: A logo as a data: URL (the page's CSP allows data: images): a white disc.
LOGO = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='28' height='28'%3E"
    "%3Ccircle cx='14' cy='14' r='12' fill='white'/%3E%3C/svg%3E"
)


@asynccontextmanager
async def omni() -> AsyncIterator[RunningServer]:
    """A whole Omni (memory store) on 127.0.0.1: ``survey_config``'s services, among them 28,
    a pt-BR service whose survey is offered by link, and 25, English (the browser's)."""
    async with open_server(
        survey_config(), store=MemoryStore(), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


async def survey_url(srv: RunningServer, alice: Client, service: int) -> tuple[str, str]:
    """A conversation of ``service`` ended (and, for 28, closed by its page survey's timeout);
    its id and the survey link the admin API shows for it."""
    async with connect_tcp(f"{srv.ws_url}/ws/visitor") as visitor:
        conversation_id = await end_conversation(alice, visitor, service)
        if service == 28:
            await visitor.until("closed")
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http:
        shown = (await http.get(f"/api/v1/conversations/{conversation_id}", headers=AUTH)).json()
    url: str = shown["survey_link"]["url"]
    return conversation_id, url


async def no_violations(page: Page, state: str) -> None:
    violations = await page.axe()
    assert not violations, f"{state}: {[str(v) for v in violations]}"


async def focused(page: Page) -> str:
    text: str = await page.evaluate("document.activeElement.textContent")
    return text


async def test_a_visitor_answers_the_survey_of_a_link_once(browser: Browser) -> None:
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        conversation_id, url = await survey_url(srv, alice, 28)
        page = await browser.new_page(viewport=PHONE, locale="pt-BR")
        assert await page.goto(url) == 200
        await page.wait_for("form.omni-survey")
        assert await page.evaluate("document.documentElement.lang") == "pt-BR"
        assert await page.evaluate("document.title") == "Pesquisa de satisfação"
        # What the administrator typed shows as text, never as markup.
        assert await page.text("h1") == "Canal <b>WhatsApp</b>"
        assert await page.evaluate("document.querySelector('h1 b')") is None
        assert await focused(page) == "Como foi o atendimento?"
        ticket = (await srv.hub.store.load_conversation(conversation_id)).ticket  # type: ignore[union-attr]
        assert await page.text(".omni-intro") == f"Sobre a sua conversa {ticket}."
        # The questions as the WebChat asks them: a row of numbers, options, a text box.
        assert await page.evaluate("document.querySelectorAll('[name=omni-q-stars]').length") == 5
        assert await page.evaluate("document.getElementById('omni-q-stars-1').required")
        legends = await page.evaluate(
            "[...document.querySelectorAll('legend')].map(e => e.textContent)"
        )
        assert legends == ["Stars? (obrigatória)", "About?"]
        assert await page.evaluate("document.getElementById('omni-q-note').maxLength") == 20
        await no_violations(page, "survey")
        await page.screenshot("survey")
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"the page scrolls sideways at 360 px ({width} px)"

        await page.click("label[for=omni-q-stars-4]")
        await page.click("text=Billing")
        await page.fill("#omni-q-note", "Rápido <i>e</i> bom")
        await page.click("form.omni-survey button[type=submit]")
        await page.wait_for("text=Obrigado!")
        assert await focused(page) == "Obrigado!"
        assert await page.text(".omni-survey-done p") == "Suas respostas foram registradas."
        await no_violations(page, "thanks")
        await page.screenshot("thanks")
        assert await srv.hub.store.survey(conversation_id) == {
            "stars": 4,
            "topic": "Billing",
            "note": "Rápido <i>e</i> bom",
        }

        # The link again, later: answered already.
        again = await browser.new_page(viewport=PHONE, locale="pt-BR")
        assert await again.goto(url) == 409
        await again.wait_for("text=Esta pesquisa já foi respondida")
        assert await again.evaluate("document.querySelector('form')") is None
        await no_violations(again, "answered")
        await again.screenshot("answered")


async def test_the_survey_with_the_keyboard_alone_in_english(browser: Browser) -> None:
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        conversation_id, url = await survey_url(srv, alice, 25)
        # The installation's colours and logo, as the WebChat shows them.
        async with httpx.AsyncClient(base_url=srv.http_url, headers=AUTH) as api:
            parameters = (await api.get("/api/v1/parameters")).json()
            parameters["palette"].update(header="#8a1538", button="#1b5e20")
            parameters["logo"] = LOGO
            assert (await api.put("/api/v1/parameters", json=parameters)).status_code == 200
        page = await browser.new_page(viewport=DESKTOP, locale="en-US")
        assert await page.goto(url) == 200
        await page.wait_for("form.omni-survey")
        header = "getComputedStyle(document.querySelector('.omni-header')).backgroundColor"
        assert await page.evaluate(header) == "rgb(138, 21, 56)"
        send = "getComputedStyle(document.querySelector('.omni-primary')).backgroundColor"
        assert await page.evaluate(send) == "rgb(27, 94, 32)"
        assert await page.evaluate("document.querySelector('.omni-logo').naturalWidth") > 0
        # The default survey: Omni's own questions, in the page's language.
        assert await page.text("legend") == "How would you rate this conversation?"
        await no_violations(page, "survey, desktop")
        await page.screenshot("survey-desktop")
        # Tab to the rating, arrows to choose, Tab to the comment, type, Tab to Send.
        await page.keyboard("Tab", "ArrowRight", "ArrowRight")
        await page.keyboard("Tab")
        await page.type("Fine")
        await page.keyboard("Tab", "Enter")
        await page.wait_for("text=Thank you!")
        assert await srv.hub.store.survey(conversation_id) == {"rating": 3, "comment": "Fine"}
        # The conversation, still waiting for its survey in the WebChat, closed with it.
        stored = await srv.hub.store.load_conversation(conversation_id)
        assert stored is not None and stored.status.value == "closed"


async def test_declining_the_survey_of_a_link(browser: Browser) -> None:
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        conversation_id, url = await survey_url(srv, alice, 28)
        page = await browser.new_page(viewport=PHONE, locale="pt-BR")
        await page.goto(url)
        await page.click("text=Não responder")
        await page.wait_for("text=Tudo bem")
        await no_violations(page, "skipped")
        stored = await srv.hub.store.load_conversation(conversation_id)
        assert stored is not None and stored.survey == "skipped"
        assert await srv.hub.store.survey(conversation_id) is None


async def test_a_link_that_does_not_work_says_so(browser: Browser) -> None:
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        assert await page.goto(f"{srv.http_url}/survey/not-a-link") == 404
        await page.wait_for("text=This link does not work")
        assert await page.text("h1") == "Survey"
        await no_violations(page, "invalid")
        await page.screenshot("invalid")

        _, url = await survey_url(srv, alice, 28)
        srv.hub.clock.epoch += timedelta(days=8)
        late = await browser.new_page(viewport=PHONE, locale="pt-BR")
        assert await late.goto(url) == 410
        await late.wait_for("text=Esta pesquisa foi encerrada")
        await no_violations(late, "expired")
        await late.screenshot("expired")


async def test_an_answer_that_is_refused_while_the_page_is_open(browser: Browser) -> None:
    """The page was opened, then the survey was answered elsewhere (another tab): Send says
    so instead of thanking for nothing; a refused answer shows in the alert line."""
    async with omni() as srv, connect_tcp(f"{srv.ws_url}/ws/operator") as alice:
        await login(alice, TOK_ALICE)
        conversation_id, url = await survey_url(srv, alice, 28)
        page = await browser.new_page(viewport=PHONE, locale="en-US")
        await page.goto(url)
        await page.wait_for("form.omni-survey")
        assert await page.evaluate("document.documentElement.lang") == "pt-BR"  # the service's
        # Past the browser's own check (a required question), the server's refusal shows.
        await page.evaluate(
            "document.querySelectorAll('[required]').forEach(e => (e.required = false))"
        )
        await page.click("form.omni-survey button[type=submit]")
        await page.wait_for("text=Há respostas faltando ou não aceitas. Confira e envie novamente.")
        assert await page.evaluate("document.querySelector('.omni-error').role") == "alert"
        await no_violations(page, "refused")
        await page.screenshot("refused")
        async with httpx.AsyncClient(timeout=10) as http:
            other: Any = await http.post(url, json={"skip": True})
            assert other.status_code == 200
        await page.click("label[for=omni-q-stars-5]")
        await page.click("form.omni-survey button[type=submit]")
        await page.wait_for("text=Esta pesquisa já foi respondida")
        stored = await srv.hub.store.load_conversation(conversation_id)
        assert stored is not None and stored.survey == "skipped"
