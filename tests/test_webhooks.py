"""Outgoing webhooks (issue 17), end to end: whole servers on 127.0.0.1, real websockets for the
conversations, real HTTP receivers (``tests.webhook_receiver``) that fail as scripted, the admin
API over HTTP; the outbox's timing in virtual time against a sender of the test's own.

What must hold: every event a subscription wants arrives, exactly once per ``webhook-id`` once
duplicates across retries are set aside, in order per conversation, validly signed — across a
500, a timeout, a refused connection and a restart of the server on PostgreSQL; a delivery that
keeps failing is parked and comes back through the API; destinations that are not public are
refused when saved and when sent (unless the development allowance lists them, which the log
says at start-up); a redirect is not followed.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import generate_latest

from omni.config import Config, ConfigError, parse_config
from omni.domain.configuration import item_of
from omni.domain.model import WEBHOOK_EVENTS, Webhook
from omni.metrics import make_registry
from omni.outbox import Outbox, Outcome, RetryPolicy
from omni.server import open_server
from omni.store import OutboxEntry, OutboxItem, Store, Write
from omni.store.memory import MemoryStore
from omni.store.postgres import open_postgres_store
from tests.support import (
    TOK_ALICE,
    Client,
    api_token,
    connect_tcp,
    eventually,
    login,
    make_config,
    make_conversation,
    start,
    with_items,
)
from tests.webhook_receiver import Receiver, open_receiver, signature_is_valid

SECRET = "whsec_" + base64.b64encode(b"omni-webhook-test-secret-32bytes").decode()
ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
BEARER = {"Authorization": f"Bearer {ADMIN}"}
LOCAL = ["127.0.0.1/32", "::1/128"]
#: Quick retries for real-time tests; the local receivers allowed.
FAST = {
    "allow_private": LOCAL,
    "retry_seconds": 0.05,
    "max_retry_seconds": 0.2,
    "jitter": 0.5,
    "read_timeout": 0.5,
    "connect_timeout": 2,
}
#: The events of a conversation answered by Alice, who ends it; the visitor answers the survey.
#: Three messages: the service's greeting, the visitor's, Alice's.
LIFE = [
    "conversation.started",
    "conversation.queued",
    "conversation.assigned",
    "conversation.message",
    "conversation.message",
    "conversation.message",
    "conversation.ended",
    "conversation.survey_answered",
    "conversation.closed",
]


def hook(url: str, events: tuple[str, ...] = WEBHOOK_EVENTS, **fields: Any) -> Webhook:
    return Webhook(
        id=fields.pop("id", "crm"),
        service_id=fields.pop("service_id", 25),
        url=url,
        events=events,  # type: ignore[arg-type]
        secret=SECRET,
        **fields,
    )


def hook_config(*hooks: Webhook, **webhooks: Any) -> Config:
    config = make_config(webhooks={**FAST, **webhooks})
    return with_items(config, api_token("root", ADMIN), *(item_of("webhooks", h) for h in hooks))


async def talk(alice: Client, vera: Client, name: str) -> str:
    """A whole conversation of service 25: ``name`` starts it, Alice takes it, one message each
    way, Alice ends it, the visitor rates it."""
    cid: str = (await start(vera, 25, name))["conversation_id"]
    offer = await alice.until("offer")
    assert offer["conversation"]["id"] == cid
    await alice.send("accept", conversation_id=cid)
    await vera.until("assigned")
    await vera.send("message", client_id="v1", text=f"Hello from {name}")
    await alice.until("message")
    await alice.send("message", conversation_id=cid, client_id="a1", text="Hi!")
    await vera.until("message")
    await alice.send("end", conversation_id=cid)
    await vera.until("survey")
    await vera.send("survey", answers={"rating": 4})
    await vera.until("closed")
    return cid


async def attempt_errors(store: Store, subscription: str = "crm") -> list[str]:
    items = await store.outbox_deliveries(subscription, limit=1000)
    attempts = await store.outbox_attempts([i.id for i in items])
    return [a.error or "" for history in attempts.values() for a in history]


def check_arrivals(receiver: Receiver, conversations: dict[str, list[str]]) -> None:
    """Every delivered request validly signed; each webhook-id delivered once; per
    conversation, the events in the order expected (the first arrival of each id)."""
    for request in receiver.requests:
        assert signature_is_valid(SECRET, request), request.headers
        assert request.headers["content-type"] == "application/json"
        assert request.json["type"] and request.json["data"]["conversation"]["id"]
    delivered = receiver.delivered()
    ids = [r.id for r in delivered]
    assert len(ids) == len(set(ids)), "a webhook-id was delivered twice"
    for cid, expected in conversations.items():
        first: dict[str, Request] = {}
        for request in receiver.requests:
            if request.json["data"]["conversation"]["id"] == cid:
                first.setdefault(request.id, request)
        assert [r.json["type"] for r in first.values()] == expected, cid
        # Nothing missing: every id that arrived was in the end delivered.
        assert set(first) <= set(ids)
        # The stored events come with their seq, strictly increasing.
        seqs = [r.json["data"]["event"]["seq"] for r in first.values() if "event" in r.json["data"]]
        assert seqs == sorted(set(seqs))


Request = Any  # tests.webhook_receiver.Request, for the annotations above


async def test_every_event_arrives_once_in_order_across_a_500_a_timeout_and_a_refusal() -> None:
    async with open_receiver(script=[500, "hang"]) as receiver:
        config = hook_config(hook(receiver.url))
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as wanda,
        ):
            store = srv.hub.store
            await login(alice, TOK_ALICE)
            first = await talk(alice, vera, "Vera")

            # The first attempt got a 500, the second no answer in time ...
            async def timed_out() -> bool:
                return any("ReadTimeout" in e for e in await attempt_errors(store))

            await eventually(timed_out)
            assert receiver.requests[0].answer == 500
            # ... then the receiver goes away: connections are refused.
            receiver.refuse()

            async def refused() -> bool:
                return any("ConnectError" in e for e in await attempt_errors(store))

            await eventually(refused)
            second = await talk(alice, wanda, "Wanda")
            await receiver.listen()
            await receiver.wait_for(2 * len(LIFE))
            check_arrivals(receiver, {first: LIFE, second: LIFE})
            errors = await attempt_errors(store)
            assert any(e.startswith("HTTP 500") for e in errors)
            # The retries share the first attempt's webhook-id.
            assert receiver.requests[0].id == receiver.requests[1].id
            assert receiver.requests[0].id in {r.id for r in receiver.delivered()}

            async def recorded() -> bool:
                items = await store.outbox_deliveries("crm", limit=100)
                return all(i.status == "sent" for i in items)

            await eventually(recorded)
            payloads = [r.json for r in receiver.delivered()]
            texts = [
                (p["data"]["event"]["author"]["kind"], p["data"]["event"]["text"])
                for p in payloads
                if p["type"] == "conversation.message" and p["data"]["conversation"]["id"] == first
            ]
            assert texts == [
                ("operator", "Hi Vera, Alice here."),
                ("visitor", "Hello from Vera"),
                ("operator", "Hi!"),
            ]
            survey = next(p for p in payloads if p["type"] == "conversation.survey_answered")
            assert survey["data"]["answers"] == {"rating": 4}
            attempts = srv.hub.metrics.webhook_attempts
            assert attempts["delivered"] == 2 * len(LIFE)
            assert attempts["http_error"] >= 1 and attempts["timeout"] >= 1
            assert attempts["connection_error"] >= 1
            assert srv.hub.metrics.webhooks["queued"] == 2 * len(LIFE)


async def test_only_the_events_asked_for_and_only_the_services_own() -> None:
    async with open_receiver() as crm, open_receiver() as other:
        config = hook_config(
            hook(crm.url, ("conversation.message", "conversation.closed")),
            hook(other.url, ("conversation.started",), id="other", service_id=27),
            # Inactive: gets nothing.
            hook(other.url, WEBHOOK_EVENTS, id="off", active=False),
        )
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        ):
            await login(alice, TOK_ALICE)
            cid = await talk(alice, vera, "Vera")
            await crm.wait_for(4)
            check_arrivals(crm, {cid: ["conversation.message"] * 3 + ["conversation.closed"]})
            assert other.requests == []
            assert [i.subscription for i in await srv.hub.store.outbox_items(cid)] == ["crm"] * 4


async def test_a_restart_in_the_middle_of_retries_loses_nothing(postgres_dsn: str) -> None:
    async with open_receiver() as receiver:
        receiver.refuse()  # down from the start: every attempt fails, and is retried
        config = hook_config(hook(receiver.url), retry_seconds=0.2, max_retry_seconds=0.5)
        async with (
            open_postgres_store(postgres_dsn) as store,
            open_server(config, store=store, host="127.0.0.1", ws_port=0, http=False) as srv,
            connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        ):
            await login(alice, TOK_ALICE)
            cid = (await start(vera, 25, "Vera"))["conversation_id"]
            await alice.until("offer")
            await alice.send("accept", conversation_id=cid)
            await vera.until("assigned")
            await vera.send("message", client_id="v1", text="before the restart")
            await vera.until("ack")

            async def retried() -> bool:
                return len(await attempt_errors(store)) >= 2

            await eventually(retried)
        # The server stopped with everything pending; another starts on the same database.
        pending = []
        async with open_postgres_store(postgres_dsn) as store:
            pending = [i for i in await store.outbox_items(cid) if i.status == "pending"]
            assert [i.payload["type"] for i in pending] == LIFE[:5]
            await receiver.listen()
            async with (
                open_server(config, store=store, host="127.0.0.1", ws_port=0, http=False) as srv,
                connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
            ):
                await login(alice, TOK_ALICE)
                await alice.send("message", conversation_id=cid, client_id="a1", text="after")
                await alice.until("ack")
                await alice.send("end", conversation_id=cid)
                await alice.until("ended")
                await receiver.wait_for(7)
                check_arrivals(receiver, {cid: LIFE[:7]})
                assert {r.id for r in receiver.delivered()} >= {i.payload["id"] for i in pending}


async def test_a_delivery_that_keeps_failing_is_parked_then_redelivered_from_the_api() -> None:
    async with open_receiver(then=500) as receiver:
        config = hook_config(hook(receiver.url, ("conversation.started", "conversation.queued")))
        config = hook_config(
            hook(receiver.url, ("conversation.started", "conversation.queued")), max_attempts=3
        )
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
            httpx.AsyncClient(
                base_url=srv.http_url, headers={"Authorization": f"Bearer {ADMIN}"}
            ) as http,
        ):
            cid = (await start(vera, 25, "Vera"))["conversation_id"]

            async def parked() -> list[dict[str, Any]]:
                r = await http.get("/api/v1/webhooks/crm/deliveries", params={"status": "parked"})
                assert r.status_code == 200, r.text
                items: list[dict[str, Any]] = r.json()["items"]
                return items

            async def both_parked() -> bool:
                return len(await parked()) == 2

            await eventually(both_parked)
            # Each parked after 3 attempts; the queued one was tried only after the started one
            # was parked (order per conversation).
            queued, started = await parked()
            assert [started["type"], queued["type"]] == LIFE[:2]
            assert started["status"] == "parked" and started["attempts"] == 3
            assert [a["status_code"] for a in started["history"]] == [500, 500, 500]
            assert all(
                a["error"].startswith("HTTP 500") and a["duration_ms"] >= 0
                for a in started["history"]
            )
            assert queued["history"][0]["at"] >= started["parked_at"]
            assert started["message_id"] == receiver.requests[0].id
            assert started["conversation_id"] == cid
            scraped = generate_latest(make_registry(srv.hub)).decode()
            assert "omni_webhooks_parked_total 2.0" in scraped
            assert 'omni_webhook_attempts_total{outcome="http_error"} 6.0' in scraped

            # The receiver is fixed; an administrator re-delivers the started one.
            receiver.then = 204
            r = await http.post(f"/api/v1/webhooks/crm/deliveries/{started['id']}/redeliver")
            assert r.status_code == 202, r.text
            assert r.json()["status"] == "pending" and r.json()["attempts"] == 0
            await receiver.wait_for(1)
            assert receiver.delivered()[0].id == started["message_id"]
            # A delivery that is not parked is not re-delivered; another webhook's is not found.
            r = await http.post(f"/api/v1/webhooks/crm/deliveries/{started['id']}/redeliver")
            assert r.status_code in (409,), r.text
            r = await http.post("/api/v1/webhooks/crm/deliveries/999999/redeliver")
            assert r.status_code == 404
            # The rest, all at once.
            r = await http.post("/api/v1/webhooks/crm/redeliver")
            assert (r.status_code, r.json()) == (202, {"redelivered": [queued["id"]]})
            await receiver.wait_for(2)
            assert [x.json["type"] for x in receiver.delivered()] == list(LIFE[:2])
            audit = (await http.get("/api/v1/audit", params={"limit": 2})).json()["items"]
            assert [(e["action"], e["kind"], e["key"], e["after"]) for e in audit] == [
                ("redeliver", "webhooks", "crm", {"deliveries": [queued["id"]]}),
                ("redeliver", "webhooks", "crm", {"deliveries": [started["id"]]}),
            ]
            delivered = (
                await http.get("/api/v1/webhooks/crm/deliveries", params={"status": "delivered"})
            ).json()["items"]
            assert {d["id"] for d in delivered} == {started["id"], queued["id"]}
            assert delivered[0]["history"][-1]["status_code"] == 204
            assert delivered[0]["history"][-1]["error"] is None


@pytest.mark.parametrize(
    "url,named",
    [
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        ("http://localhost:8080/hook", "localhost resolves to"),
        ("http://127.0.0.1:8080/hook", "127.0.0.1 is a loopback address"),
    ],
)
async def test_a_destination_that_is_not_public_is_refused_when_saved(url: str, named: str) -> None:
    config = with_items(make_config(), api_token("root", ADMIN))
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(
            base_url=srv.http_url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as http,
    ):
        body = {"id": "crm", "service_id": 25, "url": url, "events": ["conversation.message"]}
        r = await http.post("/api/v1/webhooks", json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert named in r.json()["detail"] and r.json()["type"].endswith("/refused-destination")
        assert (await http.get("/api/v1/webhooks")).json() == []
        # A replacement is checked the same way.
        srv_config = srv.configuration
        await srv_config.put(
            "webhooks", "crm", item_of("webhooks", hook("https://8.8.8.8/hook")).body, "test"
        )
        r = await http.put("/api/v1/webhooks/crm", json=body)
        assert r.status_code == 422 and named in r.json()["detail"]


async def test_with_the_allowance_a_local_receiver_works_and_the_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = with_items(make_config(webhooks=FAST), api_token("root", ADMIN))
    async with (
        open_receiver() as receiver,
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(
            base_url=srv.http_url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as http,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("allow_private" in w and "127.0.0.1/32, ::1/128" in w for w in warnings)
        body = {
            "id": "crm",
            "service_id": 25,
            "url": receiver.url,
            "events": ["conversation.started"],
            "description": "the CRM",
        }
        created = await http.post("/api/v1/webhooks", json=body)
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]  # issued, shown once
        assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
        shown = (await http.get("/api/v1/webhooks/crm")).json()
        assert shown == {**body, "active": True}
        audit = (await http.get("/api/v1/audit", params={"limit": 1})).json()["items"][0]
        assert (audit["action"], audit["kind"], audit["key"]) == ("create", "webhooks", "crm")
        assert "secret" not in json.dumps(audit)
        # Live: the next conversation of the service sends its event.
        cid = (await start(vera, 25, "Vera"))["conversation_id"]
        await receiver.wait_for(1)
        [request] = receiver.delivered()
        assert signature_is_valid(secret, request)
        assert request.json["type"] == "conversation.started"
        assert request.json["data"]["conversation"]["id"] == cid
        assert request.headers["host"] == f"127.0.0.1:{receiver.port}"
        # Updating without a secret keeps it.
        r = await http.put("/api/v1/webhooks/crm", json={**body, "description": "CRM"})
        assert r.status_code == 200 and "secret" not in r.json()
        assert srv.hub.directory.webhooks["crm"].secret == secret


async def test_without_the_allowance_nothing_is_said_and_local_calls_are_refused_when_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A destination that slipped past the save (a configuration file is not resolved when
    read) is refused when sent: the receiver never hears of it."""
    caplog.set_level(logging.INFO)
    async with open_receiver() as receiver:
        config = hook_config(hook(receiver.url, ("conversation.started",)), allow_private=[])
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        ):
            assert not any("allow_private" in r.getMessage() for r in caplog.records)
            await start(vera, 25, "Vera")

            async def refused() -> bool:
                return any("refused" in e for e in await attempt_errors(srv.hub.store))

            await eventually(refused)
            errors = await attempt_errors(srv.hub.store)
            assert errors[0] == "refused: 127.0.0.1 is a loopback address"
            assert srv.hub.metrics.webhook_attempts["address_refused"] >= 1
        assert receiver.requests == []


async def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    async with open_receiver() as elsewhere, open_receiver(then=302) as receiver:
        receiver.location = elsewhere.url
        config = hook_config(hook(receiver.url, ("conversation.started",)), max_attempts=1)
        async with (
            open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
            connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        ):
            await start(vera, 25, "Vera")

            async def parked() -> bool:
                items = await srv.hub.store.outbox_deliveries("crm", "failed")
                return len(items) == 1

            await eventually(parked)
            [item] = await srv.hub.store.outbox_deliveries("crm")
            assert item.last_error == f"HTTP 302: redirect to {elsewhere.url} not followed"
            assert len(receiver.requests) == 1 and elsewhere.requests == []
            assert srv.hub.metrics.webhook_attempts["redirect"] == 1


async def test_a_service_without_subscriptions_builds_no_webhook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hot path: no subscription, no payload built, nothing queued, no id drawn."""
    import omni.actors.conversation as actor

    def boom(*args: Any) -> Any:
        raise AssertionError("a webhook was built for a service with no subscription")

    monkeypatch.setattr(actor, "webhook_events", boom)
    config = hook_config(hook("https://8.8.8.8/hook", service_id=27))
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv,
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        cid = await talk(alice, vera, "Vera")
        assert await srv.hub.store.outbox_items(cid) == []
        assert srv.hub.metrics.webhooks["queued"] == 0


# -- the outbox's timing, in virtual time ---------------------------------------------------------


class ScriptedSender:
    """Fails each item as many times as told, recording when each attempt was made."""

    kind = "webhook"

    def __init__(self, now: Any, failures: dict[str, int], policy: RetryPolicy) -> None:
        self.now = now
        self.failures = failures
        self.retry = policy
        self.attempts: list[tuple[str, float]] = []
        self.attempted = trio.Event()

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(600):
            while len(self.attempts) < count:
                await self.attempted.wait()
                self.attempted = trio.Event()

    async def deliver(self, item: OutboxItem) -> Outcome:
        key = str(item.payload["id"])
        self.attempts.append((key, trio.current_time()))
        self.attempted.set()
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            return Outcome(False, "HTTP 503", "HTTP 503", status_code=503)
        return Outcome(True, status_code=200)


T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def running_outbox(
    store: MemoryStore, sender: ScriptedSender, draws: list[float]
) -> AsyncIterator[Outbox]:
    base = trio.current_time()

    def now() -> datetime:
        return T0 + timedelta(seconds=trio.current_time() - base)

    sender.now = now
    outbox = Outbox(store, now, [sender], random=lambda: draws.pop(0), concurrency=4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outbox.run)
        yield outbox
        nursery.cancel_scope.cancel()


async def queue(store: MemoryStore, conversation: int, *keys: str) -> None:
    conv = make_conversation(conversation)
    write = Write(conversation=conv)
    for key in keys:
        write.outbox.append(
            OutboxEntry("webhook", f"w:{key}", conv.id, {"id": key}, T0, "crm", "{}")
        )
    await store.write(write)


async def test_backoff_doubles_less_the_jitter_drawn_and_order_holds_per_conversation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    await queue(store, 1, "a1", "a2")
    await queue(store, 2, "b1")
    policy = RetryPolicy(first=10, maximum=30, max_attempts=5, jitter=0.5)
    sender = ScriptedSender(None, {"a1": 3}, policy)
    # Draws for a1's three retries: a half, nothing, all the jitter.
    async with running_outbox(store, sender, [0.5, 0.0, 1.0]):
        await sender.wait_for(6)
    start = sender.attempts[0][1]
    times = [(key, round(at - start, 6)) for key, at in sender.attempts]
    # a1: at 0, then 10 * (1 - 0.5 * 0.5) = 7.5, then 20 * 1 = 20 more, then min(40, 30) * 0.5
    # = 15 more; a2 waits behind it; b1 (another conversation) goes at once.
    # (a1 and b1 start together: which goes first is the scheduler's choice.)
    assert sorted(times, key=lambda t: (t[1], t[0])) == [
        ("a1", 0),
        ("b1", 0),
        ("a1", 7.5),
        ("a1", 27.5),
        ("a1", 42.5),
        ("a2", 42.5),
    ]
    assert [key for key, _ in sender.attempts if key[0] == "a"] == ["a1"] * 4 + ["a2"]
    [a1, a2, b1] = await store.outbox_items()
    history = await store.outbox_attempts([a1.id])
    assert [a.status_code for a in history[a1.id]] == [503, 503, 503, 200]
    assert [a.at for a in history[a1.id]] == [
        T0 + timedelta(seconds=s) for s in (0, 7.5, 27.5, 42.5)
    ]
    assert all(i.status == "sent" for i in (a1, a2, b1))


async def test_after_max_attempts_it_is_parked_and_the_next_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    await queue(store, 1, "a1", "a2")
    policy = RetryPolicy(first=1, maximum=60, max_attempts=3, jitter=0.0)
    sender = ScriptedSender(None, {"a1": 99}, policy)
    async with running_outbox(store, sender, [0.0] * 10):
        await sender.wait_for(4)
        await trio.sleep(100)  # nothing more happens
    assert [key for key, _ in sender.attempts] == ["a1", "a1", "a1", "a2"]
    a1, a2 = await store.outbox_items()
    assert (a1.status, a1.attempts, a1.last_error) == ("failed", 3, "HTTP 503")
    assert a2.status == "sent"


def test_a_configuration_file_declares_webhooks_with_their_secret() -> None:
    raw = {
        "groups": [{"id": 1, "name": "Support"}],
        "services": [{"id": 25, "name": "Support", "links": [{"group": 1}]}],
        "webhooks": [
            {
                "id": "crm",
                "service_id": 25,
                "url": "https://hooks.example.com/omni",
                "events": ["conversation.closed"],
                "secret": SECRET,
            }
        ],
    }
    config = parse_config(raw)
    assert config.directory.webhooks["crm"].secret == SECRET
    assert config.directory.subscriptions(25) == {
        "conversation.closed": (config.directory.webhooks["crm"],)
    }
    assert config.directory.subscriptions(26) == {}
    without = {**raw, "webhooks": [{k: v for k, v in raw["webhooks"][0].items() if k != "secret"}]}
    with pytest.raises(ConfigError, match="needs a secret"):
        parse_config(without)
    weak = {**raw, "webhooks": [{**raw["webhooks"][0], "secret": "whsec_c2hvcnQ="}]}
    with pytest.raises(ConfigError, match="secret"):
        parse_config(weak)
    unknown = {**raw, "webhooks": [{**raw["webhooks"][0], "service_id": 99}]}
    with pytest.raises(ConfigError, match="webhook crm: unknown service 99"):
        parse_config(unknown)


async def test_a_service_with_webhooks_cannot_be_deleted_and_the_secret_stays_hidden() -> None:
    config = hook_config(hook("https://8.8.8.8/hook"))
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=BEARER) as http,
    ):
        r = await http.delete("/api/v1/services/25")
        assert r.status_code == 409 and "webhook crm: unknown service 25" in r.json()["detail"]
        listed = (await http.get("/api/v1/webhooks")).json()
        assert listed == [
            {
                "id": "crm",
                "service_id": 25,
                "url": "https://8.8.8.8/hook",
                "events": list(WEBHOOK_EVENTS),
                "active": True,
                "description": "",
            }
        ]
        assert (await http.get("/api/v1/webhooks/crm/deliveries")).json() == {
            "items": [],
            "next_before": None,
        }
        assert (await http.get("/api/v1/webhooks/nope/deliveries")).status_code == 404
        r = await http.get("/api/v1/webhooks/crm/deliveries", params={"status": "lost"})
        assert r.status_code == 400
        assert (await http.delete("/api/v1/webhooks/crm")).status_code == 204
        assert (await http.delete("/api/v1/services/25")).status_code == 204
