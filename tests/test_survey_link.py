"""The survey by link (issue 17): a conversation's survey answered once, from ``/survey/{token}``.

Three layers, each checked where its rules live:

* the rules (pure): which conversations owe a survey, until when, and that a closed one takes
  its answers once (``omni.domain.conversation``), and the closing text that carries the link;
* the link: signed by the server's one link signer for the purpose ``survey``, refused when
  tampered with, signed for something else, by another key, or malformed (``SurveyLinks``);
* a whole server on 127.0.0.1 over real HTTP and websockets: the admin API shows the link of a
  pending survey, the page shows the questions (or why not, with its status), the answers go
  through the conversation (an ``ended`` one closes, a closed one stores them once) and reach
  the API as the WebChat's would, refusals are problem details with a stable ``code``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import trio

from omni.actors.survey_links import SurveyLinks
from omni.attachments import Links
from omni.clock import Clock
from omni.config import Config
from omni.domain.configuration import item_of
from omni.domain.conversation import (
    SaveSurvey,
    Status,
    SurveyAnswered,
    SurveyExpired,
    SurveyRefused,
    SurveySkipped,
    VisitorEnd,
    answer_closed_survey,
    closing_text,
    survey_by_link,
    survey_deadline,
    survey_status,
)
from omni.domain.model import GroupLink, Service, SurveyMode, SurveyQuestion, Timers
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store import Store
from omni.store.memory import MemoryStore
from tests.support import (
    T0,
    TOK_ALICE,
    Client,
    api_token,
    connect_tcp,
    login,
    make_config,
    start,
    with_items,
)
from tests.test_conversation_machine import CTX, SERVICE, abandoned, active, apply, at, ended

ADMIN = "admin-survey-links-Qm4Zx8Lp2Vr6"
LINK_SECRET = "link-secret-Ht5Nw9Kc3Ja7Ye1Rb"
WEEK = timedelta(days=7)
QUESTIONS = [
    {"id": "stars", "kind": "rating", "label": "Stars?", "required": True},
    {"id": "topic", "kind": "choice", "label": "About?", "options": ["Orders", "Billing"]},
    {"id": "note", "kind": "text", "label": "Anything else?", "max_length": 20},
]


# -- the rules ----------------------------------------------------------------------------------


def closed_by_timeout() -> Any:
    """A conversation whose page survey timed out (ended at t=3, closed at t=4)."""
    conv = ended()
    apply(conv, SurveyExpired(), t=4)
    assert conv.status is Status.CLOSED
    return conv


def test_a_survey_is_owed_from_the_end_until_answered_declined_or_past_its_deadline() -> None:
    conv = ended()
    assert conv.survey == "pending"
    deadline = survey_deadline(conv, SERVICE)
    assert deadline == at(3) + WEEK
    assert survey_by_link(conv, SERVICE, at(10)) == "open"
    # The page's survey timing out closes the conversation, not the survey.
    apply(conv, SurveyExpired(), t=600)
    assert conv.status is Status.CLOSED and conv.survey == "pending"
    assert survey_by_link(conv, SERVICE, deadline - timedelta(seconds=1)) == "open"
    assert survey_by_link(conv, SERVICE, deadline) == "expired"
    assert survey_status(conv, SERVICE, deadline) == "expired"
    assert survey_status(conv, SERVICE, at(10)) == "pending"
    # The deadline is the service's, as it is now (F20).
    shorter = msgspec.structs.replace(SERVICE, timers=Timers(survey_link_timeout=60))
    assert survey_by_link(conv, shorter, at(64)) == "expired"


@pytest.mark.parametrize(
    ("settle", "state"),
    [(SurveyAnswered({"rating": 5}), "answered"), (SurveySkipped(), "skipped")],
    ids=["answered", "skipped"],
)
def test_a_survey_answered_or_declined_in_the_page_is_settled_for_good(
    settle: Any, state: str
) -> None:
    conv = ended()
    apply(conv, settle, t=4)
    assert conv.survey == state
    assert survey_deadline(conv, SERVICE) is None
    assert survey_by_link(conv, SERVICE, at(5)) == "answered"
    with pytest.raises(SurveyRefused) as refused:
        answer_closed_survey(conv, {"rating": 1}, at(5), CTX)
    assert refused.value.reason == "answered"


def test_conversations_without_a_survey_owe_none() -> None:
    no_survey = msgspec.structs.replace(SERVICE, survey=SurveyMode.NONE)
    ctx = dataclasses.replace(CTX, service=no_survey)
    conv = active(ctx=ctx)
    apply(conv, VisitorEnd(), ctx=ctx)
    assert conv.status is Status.CLOSED and conv.survey is None
    assert survey_by_link(conv, no_survey, at(5)) == "none"
    gone = abandoned()  # nobody answered it: no survey
    assert gone.survey is None and survey_by_link(gone, SERVICE, at(5)) == "none"
    # A pending survey of a service that asks none any more has nothing to show.
    pending = closed_by_timeout()
    assert survey_by_link(pending, no_survey, at(5)) == "none"


def test_a_closed_conversation_takes_its_survey_once() -> None:
    conv = closed_by_timeout()
    before = dataclasses.asdict(conv)
    effects = answer_closed_survey(conv, {"rating": 4, "comment": None}, at(100), CTX)
    assert effects == [SaveSurvey({"rating": 4})]
    assert conv.survey == "answered"
    # Nothing else changed: no event, the same status and history.
    assert {k: v for k, v in dataclasses.asdict(conv).items() if k != "survey"} == {
        k: v for k, v in before.items() if k != "survey"
    }
    with pytest.raises(SurveyRefused) as again:
        answer_closed_survey(conv, {"rating": 1}, at(101), CTX)
    assert again.value.reason == "answered"


def test_a_closed_conversations_survey_may_be_declined_once() -> None:
    conv = closed_by_timeout()
    assert answer_closed_survey(conv, None, at(100), CTX) == [SaveSurvey(None)]
    assert conv.survey == "skipped"
    with pytest.raises(SurveyRefused):
        answer_closed_survey(conv, {"rating": 3}, at(101), CTX)


@pytest.mark.parametrize(
    "answers", [{"rating": 6}, {"mood": "happy"}, {"comment": 5}, {"rating": True}], ids=repr
)
def test_answers_by_link_are_checked_like_the_pages(answers: dict[str, Any]) -> None:
    conv = closed_by_timeout()
    before = dataclasses.asdict(conv)
    with pytest.raises(Exception) as refused:
        answer_closed_survey(conv, answers, at(100), CTX)
    assert getattr(refused.value, "code", None) == "invalid_survey"
    assert dataclasses.asdict(conv) == before  # still pending: the visitor may try again


def test_past_its_deadline_a_closed_conversations_survey_is_refused() -> None:
    conv = closed_by_timeout()
    with pytest.raises(SurveyRefused) as late:
        answer_closed_survey(conv, {"rating": 5}, at(3) + WEEK, CTX)
    assert late.value.reason == "expired"
    assert conv.survey == "pending"


def test_only_a_closed_conversation_is_answered_this_way() -> None:
    with pytest.raises(ValueError, match="not closed"):
        answer_closed_survey(ended(), {"rating": 5}, at(5), CTX)


def test_the_closing_text_carries_the_link_when_the_service_says_so() -> None:
    link = "https://chat.example.com/survey/abc"
    assert closing_text(SERVICE, link) == "Thanks, bye."  # survey_link is off by default
    on = msgspec.structs.replace(
        SERVICE, survey_link=True, survey_link_message="Rate us: {link} (thanks!)"
    )
    assert closing_text(on, link) == f"Thanks, bye.\n\nRate us: {link} (thanks!)"
    assert closing_text(on, None) == "Thanks, bye."  # no survey to answer
    bare = msgspec.structs.replace(on, closing_message="")
    assert closing_text(bare, link) == f"Rate us: {link} (thanks!)"


def test_a_survey_link_message_must_have_a_place_for_the_link() -> None:
    body = msgspec.to_builtins(SERVICE)
    body["survey_link_message"] = "Rate us!"
    with pytest.raises(msgspec.ValidationError, match=r"must contain \{link\}"):
        msgspec.convert(body, Service)


# -- the link -------------------------------------------------------------------------------------


def test_a_survey_link_names_its_conversation_and_expiry_under_the_servers_signature() -> None:
    signer = Links(LINK_SECRET, 3600)
    links = SurveyLinks(signer, "https://chat.example.com")
    until = datetime(2026, 12, 2, 12, 0, 30, 500000, tzinfo=UTC)
    link = links.mint("c1-uuid", until)
    assert link.url.startswith("https://chat.example.com/survey/c1-uuid.")
    assert link.expires_at == until.replace(microsecond=0)
    token = link.url.rsplit("/", 1)[1]
    assert links.read(token) == ("c1-uuid", link.expires_at)
    # The same conversation and deadline: the same link, however often it is asked for.
    assert links.mint("c1-uuid", until) == link

    conversation_id, expires, signature = token.split(".")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    attachment = signer.sign("attachment", conversation_id, int(expires))
    other_key = SurveyLinks(Links("another-secret-Pq2Ws8Ed4Rf6Tg0Y", 3600), "https://x")
    forged = [
        f"{conversation_id}.{expires}.{flipped}",  # tampered signature
        f"c2-uuid.{expires}.{signature}",  # another conversation
        f"{conversation_id}.{int(expires) + 86_400}.{signature}",  # a later expiry
        f"{conversation_id}.{expires}.{attachment}",  # signed, for something else
        other_key.mint(conversation_id, until).url.rsplit("/", 1)[1],  # another server's key
        "",
        "x",
        "a.b.c",
        f"{conversation_id}.{expires}.{signature.upper()}",
        f"{conversation_id}.{expires}.{signature}.",
        f"../{token}",
        "a" * 5000,
    ]
    for bad in forged:
        with pytest.raises(SurveyRefused) as refused:
            links.read(bad)
        assert refused.value.reason == "invalid", bad


def test_download_links_still_check_as_before() -> None:
    """The signer's purposes are apart: a survey token's signature is no download link."""
    signer = Links(LINK_SECRET, 3600)
    path, _ = signer.mint("att-1", T0)
    query = dict(part.split("=") for part in path.split("?")[1].split("&"))
    assert signer.check("att-1", query["expires"], query["signature"], T0)
    assert not signer.check("att-1", query["expires"], query["signature"], T0 + timedelta(hours=2))
    survey = signer.sign("survey", "att-1", int(query["expires"]))
    assert not signer.check("att-1", query["expires"], survey, T0)


# -- a whole server ---------------------------------------------------------------------------


def survey_config(**server: Any) -> Config:
    """``make_config`` with an admin token, a fixed link key, and service 28, "Canal": the
    kind of service a messaging channel serves — a custom survey with a required question,
    offered by link (``survey_link``), a page survey that times out at once, in pt-BR."""
    channel = Service(
        id=28,
        name="Canal <b>WhatsApp</b>",
        links=(GroupLink(1),),
        schedule="always",
        closing_message="Obrigado!",
        survey=SurveyMode.CUSTOM,
        survey_questions=tuple(msgspec.convert(q, SurveyQuestion) for q in QUESTIONS),
        survey_link=True,
        survey_link_message="Avalie: {link}",
        timers=Timers(survey_timeout=0.2),
        language="pt-BR",
    )
    server = {"attachments": {"link_secret": LINK_SECRET}, **server}
    return with_items(
        make_config(**server), api_token("admin", ADMIN), item_of("services", channel)
    )


@asynccontextmanager
async def omni(
    config: Config | None = None, store: Store | None = None
) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    async with (
        open_server(
            config or survey_config(),
            store=store if store is not None else MemoryStore(),
            clock=Clock(T0),
            entropy=SeededEntropy(17),
            host="127.0.0.1",
            ws_port=0,
            http_port=0,
        ) as srv,
        httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http,
    ):
        yield srv, http


AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def end_conversation(alice: Client, vera: Client, service: int = 25) -> str:
    """Vera talks to Alice on ``service``; Alice ends it. The conversation's id."""
    await start(vera, service)
    offer = await alice.until("offer")
    conversation_id: str = offer["conversation"]["id"]
    await alice.send("accept", conversation_id=conversation_id)
    await alice.until("assigned")
    await alice.send("end", conversation_id=conversation_id)
    await vera.until("ended")
    return conversation_id


async def detail(http: httpx.AsyncClient, conversation_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/conversations/{conversation_id}", headers=AUTH)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def page_data(response: httpx.Response) -> dict[str, Any]:
    """The survey page's ``data-survey``, as its script reads it."""
    found = re.search(r'<body data-survey="([^"]*)">', response.text)
    assert found is not None, response.text
    data: dict[str, Any] = json.loads(html.unescape(found[1]))
    return data


def path_of(url: str) -> str:
    return "/survey/" + url.rsplit("/survey/", 1)[1]


async def test_an_ended_conversations_survey_answered_by_link_closes_it() -> None:
    async with (
        omni() as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera)
        await vera.until("survey")
        shown = await detail(http, conversation_id)
        assert shown["conversation"]["status"] == "ended"
        assert shown["survey_status"] == "pending"
        link = shown["survey_link"]
        ended_at = datetime.fromisoformat(shown["conversation"]["ended_at"])
        assert datetime.fromisoformat(link["expires_at"]) == (ended_at + WEEK).replace(
            microsecond=0
        )
        assert link["url"].startswith(f"{srv.http_url}/survey/{conversation_id}.")
        # What a channel will call: the same link.
        minted = await srv.hub.survey_link(conversation_id)
        assert minted is not None and minted.url == link["url"]

        page = await http.get(path_of(link["url"]))
        assert page.status_code == 200
        data = page_data(page)
        assert data["state"] == "open"
        assert data["ticket"] == shown["conversation"]["ticket"]
        assert [q["id"] for q in data["questions"]] == ["rating", "comment"]
        assert data["service"]["survey"] == "default"

        answered = await http.post(
            path_of(link["url"]), json={"answers": {"rating": 4, "comment": "Rápido"}}
        )
        assert answered.status_code == 200 and answered.json() == {"status": "answered"}
        # Through the conversation: it closes, for both sides, as the page's survey would.
        assert (await vera.until("closed"))["message"] == "Bye!"
        assert (await alice.until("closed"))["conversation_id"] == conversation_id
        after = await detail(http, conversation_id)
        assert after["conversation"]["status"] == "closed"
        assert after["survey"] == {"rating": 4, "comment": "Rápido"}
        assert after["survey_status"] == "answered" and after["survey_link"] is None

        again = await http.post(path_of(link["url"]), json={"answers": {"rating": 1}})
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"
        assert again.json()["code"] == "survey_answered"
        reopened = await http.get(path_of(link["url"]))
        assert reopened.status_code == 409
        assert page_data(reopened)["state"] == "answered"
        assert "questions" not in page_data(reopened)
        assert await srv.hub.store.survey(conversation_id) == {"rating": 4, "comment": "Rápido"}


async def test_a_closed_conversations_survey_is_answered_once_by_link(store: Store) -> None:
    """On both stores: on PostgreSQL the two answers at once really interleave."""
    async with (
        omni(store=store) as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera, service=28)
        # The page's survey times out: closed, its survey still owed.
        await vera.until("closed")
        shown = await detail(http, conversation_id)
        assert shown["conversation"]["status"] == "closed"
        assert shown["survey"] is None and shown["survey_status"] == "pending"
        path = path_of(shown["survey_link"]["url"])
        page = await http.get(path)
        assert page.status_code == 200
        assert [q["id"] for q in page_data(page)["questions"]] == ["stars", "topic", "note"]

        # Refusals change nothing, each a problem with a stable code.
        for body, status, code in [
            ({"answers": {"topic": "Orders"}}, 422, "invalid_survey"),  # stars is required
            ({"answers": {"stars": 9}}, 422, "invalid_survey"),
            ({"answers": {"stars": 5, "topic": "Other"}}, 422, "invalid_survey"),
            ({"answers": {"stars": 5, "mood": "happy"}}, 422, "invalid_survey"),
            ({"answers": {"stars": 5, "note": "x" * 21}}, 422, "invalid_survey"),
            ({"answers": {"stars": True}}, 400, "invalid_body"),
            ({"answers": {"stars": 4.5}}, 400, "invalid_body"),
            ({"answers": {"stars": [5]}}, 400, "invalid_body"),
            ({"answers": {"stars": 5}, "skip": True}, 400, "invalid_body"),
            ({}, 400, "invalid_body"),
            ({"skip": False}, 400, "invalid_body"),
            ({"answers": {"stars": 5}, "extra": 1}, 400, "invalid_body"),
        ]:
            refused = await http.post(path, json=body)
            assert refused.status_code == status, (body, refused.text)
            problem = refused.json()
            assert problem["code"] == code and problem["status"] == status, problem
        assert (await http.post(path, content=b"{not json", headers=JSON)).status_code == 400
        wrong_type = await http.post(path, content=b'{"skip": true}', headers=TEXT)
        assert wrong_type.status_code == 415
        problem = (await http.post(path, json={"answers": {"topic": "Orders"}})).json()
        assert "'stars' needs an answer" in problem["detail"]
        assert await srv.hub.store.survey(conversation_id) is None
        assert (await detail(http, conversation_id))["survey_status"] == "pending"

        # Two answers at once: one is taken, the other told it came second.
        results: list[httpx.Response] = []

        async def answer(stars: int) -> None:
            body = {"answers": {"stars": stars, "topic": "Billing", "note": "<b>ok</b>"}}
            results.append(await http.post(path, json=body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer, 5)
            nursery.start_soon(answer, 1)
        assert sorted(r.status_code for r in results) == [200, 409]
        taken = next(r for r in results if r.status_code == 200)
        assert taken.json() == {"status": "answered"}
        stored = await srv.hub.store.survey(conversation_id)
        assert stored in (
            {"stars": 5, "topic": "Billing", "note": "<b>ok</b>"},
            {"stars": 1, "topic": "Billing", "note": "<b>ok</b>"},
        )
        # The answers reach the API as the WebChat's do; nothing was added to the history.
        after = await detail(http, conversation_id)
        assert after["survey"] == stored and after["survey_status"] == "answered"
        assert after["survey_link"] is None
        assert after["conversation"]["last_seq"] == shown["conversation"]["last_seq"]
        assert (await http.get(path)).status_code == 409
        assert (await http.post(path, json={"skip": True})).json()["code"] == "survey_answered"


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


async def test_the_survey_may_be_declined_by_link_once() -> None:
    async with (
        omni() as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera)
        path = path_of((await detail(http, conversation_id))["survey_link"]["url"])
        skipped = await http.post(path, json={"skip": True})
        assert skipped.status_code == 200 and skipped.json() == {"status": "skipped"}
        await vera.until("closed")
        after = await detail(http, conversation_id)
        assert after["survey"] is None and after["survey_status"] == "skipped"
        assert after["survey_link"] is None
        late = await http.post(path, json={"answers": {"rating": 5}})
        assert late.status_code == 409 and late.json()["code"] == "survey_answered"
        assert await srv.hub.store.survey(conversation_id) is None


async def test_a_link_this_server_did_not_sign_is_not_found() -> None:
    async with (
        omni() as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera)
        path = path_of((await detail(http, conversation_id))["survey_link"]["url"])
        conversation, expires, signature = path.removeprefix("/survey/").split(".")
        other = SurveyLinks(Links("another-secret-Pq2Ws8Ed4Rf6Tg0Y", 60), srv.http_url)
        for bad in [
            f"/survey/{conversation}.{expires}.{signature[::-1]}",
            f"/survey/{conversation}.{int(expires) + 1}.{signature}",
            path_of(other.mint(conversation, T0 + WEEK).url),
            "/survey/nothing",
            "/survey/" + "9" * 3000,
        ]:
            page = await http.get(bad)
            assert page.status_code == 404, bad
            assert page_data(page) == {"state": "invalid"}  # nothing of the conversation
            assert "Support" not in page.text
            refused = await http.post(bad, json={"answers": {"rating": 5}})
            assert refused.status_code == 404 and refused.json()["code"] == "invalid_link"
        assert srv.hub.running(conversation_id) is not None  # still waiting for its survey
        assert await srv.hub.store.survey(conversation_id) is None


async def test_a_survey_past_its_time_is_gone() -> None:
    async with (
        omni() as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera, service=28)
        await vera.until("closed")
        path = path_of((await detail(http, conversation_id))["survey_link"]["url"])

        # An administrator shortens the time to answer: the links already sent follow it.
        body = (await http.get("/api/v1/services/28", headers=AUTH)).json()
        body["timers"]["survey_link_timeout"] = 60
        assert (await http.put("/api/v1/services/28", json=body, headers=AUTH)).status_code == 200
        srv.hub.clock.epoch += timedelta(seconds=61)
        gone = await http.get(path)
        assert gone.status_code == 410 and page_data(gone)["state"] == "expired"
        refused = await http.post(path, json={"answers": {"stars": 5}})
        assert refused.status_code == 410 and refused.json()["code"] == "survey_expired"
        shown = await detail(http, conversation_id)
        assert shown["survey_status"] == "expired" and shown["survey_link"] is None

        # A link past its own expiry is gone too, whatever the service says now.
        body["timers"]["survey_link_timeout"] = 7 * 86_400
        assert (await http.put("/api/v1/services/28", json=body, headers=AUTH)).status_code == 200
        assert (await http.get(path)).status_code == 200  # its expiry was a week
        assert srv.hub.survey_links is not None
        stale = srv.hub.survey_links.mint(conversation_id, srv.hub.clock.now())
        assert (await http.get(path_of(stale.url))).status_code == 410
        assert (await http.post(path_of(stale.url), json={"skip": True})).status_code == 410
        assert await srv.hub.store.survey(conversation_id) is None


async def test_no_link_for_a_conversation_without_a_survey() -> None:
    async with (
        omni() as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera, service=27)  # survey "none"
        await vera.until("closed")
        shown = await detail(http, conversation_id)
        assert shown["survey_status"] is None and shown["survey_link"] is None
        assert await srv.hub.survey_link(conversation_id) is None
        assert await srv.hub.survey_link("no-such-conversation") is None
        # Even a link signed for it leads nowhere.
        assert srv.hub.survey_links is not None
        signed = srv.hub.survey_links.mint(conversation_id, srv.hub.clock.now() + WEEK)
        page = await http.get(path_of(signed.url))
        assert page.status_code == 410 and page_data(page)["state"] == "none"
        refused = await http.post(path_of(signed.url), json={"answers": {}})
        assert refused.status_code == 410 and refused.json()["code"] == "no_survey"


async def test_the_page_is_a_strict_page_in_the_services_language() -> None:
    async with (
        omni(survey_config(public_url="https://chat.example.com")) as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        channel = await end_conversation(alice, vera, service=28)
        url = (await detail(http, channel))["survey_link"]["url"]
        # Links are for the public origin, where the visitor will open them.
        assert url.startswith("https://chat.example.com/survey/")
        conv = await srv.hub.store.load_conversation(channel)
        assert conv is not None
        service = srv.hub.directory.services[28]
        text = closing_text(service, url)
        assert text == f"Obrigado!\n\nAvalie: {url}"
        page = await http.get(path_of(url), headers={"Accept-Language": "en"})
        assert page.status_code == 200
        assert '<html lang="pt-BR">' in page.text  # the service's language wins
        headers = page.headers
        assert headers["cache-control"] == "no-store"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-robots-tag"] == "noindex"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"] == "text/html; charset=utf-8"
        policy = dict(
            d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
        assert policy["connect-src"] == "'self'"  # its own URL only: no websocket
        assert policy["frame-ancestors"] == "'none'"
        assert "<script>" not in page.text and " style=" not in page.text
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
            assert (await http.get(asset)).status_code == 200
        # What an administrator typed is data, never markup.
        assert "<b>WhatsApp</b>" not in page.text
        assert page_data(page)["service"]["name"] == "Canal <b>WhatsApp</b>"

        # A service on "auto" follows the browser, like the WebChat.
        async with connect_tcp(f"{srv.ws_url}/ws/visitor") as will:
            default = await end_conversation(alice, will, service=25)
        path = path_of((await detail(http, default))["survey_link"]["url"])
        for accept, lang in [("pt-PT,pt;q=0.9", "pt-BR"), ("de, en;q=0.5", "en"), ("", "en")]:
            shown = await http.get(path, headers={"Accept-Language": accept})
            assert f'<html lang="{lang}">' in shown.text
        invalid = await http.get("/survey/x", headers={"Accept-Language": "pt-BR"})
        assert '<html lang="pt-BR">' in invalid.text and invalid.status_code == 404


async def test_a_link_outlives_a_restart_when_the_key_is_configured() -> None:
    store = MemoryStore()
    async with (
        omni(store=store) as (srv, http),
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        conversation_id = await end_conversation(alice, vera, service=28)
        await vera.until("closed")
        path = path_of((await detail(http, conversation_id))["survey_link"]["url"])
    async with omni(store=store) as (srv, http):
        answered = await http.post(path, json={"answers": {"stars": 3}})
        assert answered.status_code == 200
        assert await srv.hub.store.survey(conversation_id) == {"stars": 3}
    # Without a configured key each start signs with a key of its own.
    config = survey_config(attachments={})
    async with omni(config, store=store) as (srv, http):
        assert (await http.get(path)).status_code == 404
