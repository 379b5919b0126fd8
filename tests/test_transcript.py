"""F14: the transcript by e-mail, end to end over a real SMTP server (aiosmtpd on 127.0.0.1).

A whole server (real websockets on 127.0.0.1, memory store) with ``[server.smtp]`` pointing at
an SMTP server run by the test; the visitor asks for the transcript from the closing page and
the e-mail arrives, at least once and only once per address, across an unreachable mail server
and a restart.
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import trio
from aiosmtpd.controller import Controller
from prometheus_client import generate_latest

from omni.clock import Clock
from omni.config import Config
from omni.metrics import make_registry
from omni.server import RunningServer, open_server
from omni.store.memory import MemoryStore
from tests.support import (
    TOK_BRUNO,
    Client,
    api_token,
    connect_tcp,
    eventually,
    free_port,
    login,
    make_config,
    make_conversation,
    start,
    with_items,
    with_service,
)

SENDER = "chat@omni.test"


class Inbox:
    """An aiosmtpd handler that keeps what it accepts and refuses some recipients (550, quoting
    the address as mail servers do)."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_server(port: int, inbox: Inbox | None = None) -> AsyncIterator[Inbox]:
    inbox = inbox or Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    await trio.to_thread.run_sync(controller.start)
    try:
        yield inbox
    finally:
        await trio.to_thread.run_sync(controller.stop)


def mail_config(port: int, **changes: Any) -> Config:
    smtp = {
        "host": "127.0.0.1",
        "port": port,
        "sender": SENDER,
        "timeout": 5,
        "retry_seconds": 0.2,
        **changes,
    }
    return make_config(smtp=smtp)


@asynccontextmanager
async def chat(
    config: Config, store: MemoryStore | None = None
) -> AsyncIterator[tuple[RunningServer, Client, Client]]:
    """A server (websockets only), a visitor's and an operator's connection to it."""
    async with (
        open_server(config, store=store, host="127.0.0.1", ws_port=0, http=False) as srv,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        connect_tcp(f"{srv.ws_url}/ws/operator") as bruno,
    ):
        yield srv, vera, bruno


async def ended_conversation(srv: RunningServer, vera: Client, bruno: Client) -> dict[str, Any]:
    """Vera (service 27, no survey) and Bruno talk, Bruno ends it; Vera is on the closing page."""
    await login(bruno, TOK_BRUNO)
    started = await start(vera, 27, name="Vera")
    cid = started["conversation_id"]
    await bruno.send("accept", conversation_id=(await bruno.until("offer"))["conversation"]["id"])
    await vera.until("assigned")
    await vera.send("message", client_id="v1", text="Hello, my invoice is wrong")
    await bruno.until("message")
    await bruno.send(
        "message", conversation_id=cid, client_id="b1", text="Let me check.\nOne moment ✓"
    )
    await vera.until("message")
    await bruno.send("end", conversation_id=cid)
    assert (await vera.until("ended"))["by"] == "operator"
    await vera.until("closed")
    return started


@pytest.fixture
def port() -> int:
    return free_port()


async def test_the_visitor_gets_the_transcript_by_email(port: int) -> None:
    async with (
        smtp_server(port) as inbox,
        chat(mail_config(port)) as (srv, vera, bruno),
    ):
        started = await ended_conversation(srv, vera, bruno)
        cid = started["conversation_id"]
        await vera.send("transcript", email="vera@example.com")
        queued = await vera.expect("transcript_queued")
        assert queued == {
            "type": "transcript_queued",
            "conversation_id": cid,
            "email": "vera@example.com",
        }
        await eventually(lambda: len(inbox.messages) == 1)
        [mail] = inbox.messages
        assert mail["To"] == "vera@example.com" and mail["From"] == SENDER
        assert mail["Subject"] == f"Your conversation {started['ticket']} with No survey"
        assert mail["Message-ID"].endswith("@omni.test>")
        body = mail.get_content()
        lines = body.splitlines()
        assert lines[0] == f"No survey — conversation {started['ticket']}"
        said = [line.split("] ", 1)[1] for line in lines if line.startswith("[")]
        assert said == [
            "Bruno: Hello! How can I help you?",  # the greeting: the visitor saw it
            "Vera: Hello, my invoice is wrong",
            "Bruno: Let me check.",
        ]
        assert "    One moment ✓" in lines  # the second line of Bruno's message
        assert lines[-1] == "See you."  # the service's closing message
        [item] = await srv.hub.store.outbox_items(cid)
        assert item.sent_at is not None and item.attempts == 0

        # The same address again (any case): queued once, sent once.
        await vera.send("transcript", email="Vera@Example.com")
        await vera.expect("transcript_queued")
        # From the closing page after a reconnect: the resumed connection may ask too.
        async with connect_tcp(f"{srv.ws_url}/ws/visitor") as back:
            await back.send("resume", token=started["token"], last_seq=0)
            assert (await back.until("resumed"))["status"] == "closed"
            await back.until("closed")
            await back.send("transcript", email="boss@example.com")
            await back.expect("transcript_queued")
        await eventually(lambda: len(inbox.messages) == 2)

        async def all_sent() -> bool:
            return all(i.sent_at is not None for i in await srv.hub.store.outbox_items(cid))

        # Both recorded as sent, nothing pending: nothing will be sent again.
        await eventually(all_sent)
        assert await srv.hub.store.outbox_next_due() is None
        assert [m["To"] for m in inbox.messages] == ["vera@example.com", "boss@example.com"]
        assert srv.hub.metrics.emails == {"queued": 2, "sent": 2, "retried": 0, "failed": 0}
        exposition = generate_latest(make_registry(srv.hub)).decode()
        assert 'omni_emails_total{outcome="sent"} 2.0' in exposition


async def test_transcript_requests_that_are_refused(port: int) -> None:
    config = with_service(mail_config(port), 25, lambda body: body.update(transcript_email=False))
    async with (
        smtp_server(port) as inbox,
        chat(config) as (srv, vera, bruno),
        connect_tcp(f"{srv.ws_url}/ws/visitor") as olga,
    ):
        await olga.send("transcript", email="olga@example.com")
        assert (await olga.expect("error"))["code"] == "not_started"
        # Service 25 does not send transcripts, even once the conversation is over.
        await start(olga, 25, name="Olga")
        await olga.send("end")
        await olga.until("closed")
        await olga.send("transcript", email="olga@example.com")
        assert (await olga.expect("error"))["code"] == "transcript_disabled"

        await login(bruno, TOK_BRUNO)
        started = await start(vera, 27, name="Vera")
        await vera.send("transcript", email="vera@example.com")
        error = await vera.until("error")
        assert error["code"] == "invalid_state", error  # not over yet
        await bruno.send(
            "accept", conversation_id=(await bruno.until("offer"))["conversation"]["id"]
        )
        await bruno.send("end", conversation_id=started["conversation_id"])
        await vera.until("closed")
        for bad in ("vera", "vera@localhost", "a@b.c, x@y.z", "v\nBcc: x@y.z@e.com", "x" * 300):
            await vera.send("transcript", email=bad)
            error = await vera.expect("error")
            assert error["code"] in ("invalid_email", "invalid_frame"), (bad, error)
        await vera.send("transcript", email="")
        assert (await vera.expect("error"))["code"] == "invalid_frame"
        for n in range(3):
            await vera.send("transcript", email=f"v{n}@example.com")
            await vera.expect("transcript_queued")
        await vera.send("transcript", email="v3@example.com")
        assert (await vera.expect("error"))["code"] == "too_many_transcripts"
        await vera.send("transcript", email="v1@example.com")  # already queued: fine
        await vera.expect("transcript_queued")
        await eventually(lambda: len(inbox.messages) == 3)
        assert sorted(m["To"] for m in inbox.messages) == [f"v{n}@example.com" for n in range(3)]


async def test_without_smtp_transcripts_are_not_offered() -> None:
    async with (
        chat(make_config()) as (srv, vera, bruno),
    ):
        await ended_conversation(srv, vera, bruno)
        await vera.send("transcript", email="vera@example.com")
        assert (await vera.expect("error"))["code"] == "transcript_unavailable"
        assert await srv.hub.store.outbox_items() == []


async def test_an_unreachable_mail_server_is_retried_and_a_refusal_is_not(port: int) -> None:
    async with (
        chat(mail_config(port)) as (srv, vera, bruno),
    ):
        started = await ended_conversation(srv, vera, bruno)
        cid = started["conversation_id"]
        await vera.send("transcript", email="vera@example.com")
        await vera.expect("transcript_queued")
        store = srv.hub.store

        async def item(address: str) -> Any:
            found = [i for i in await store.outbox_items(cid) if i.payload["to"] == address]
            return found[0] if found else None

        # Nothing listens on the port: attempts fail and are retried (0.2 s, 0.4 s, ...).
        async def retried() -> bool:
            return bool((await item("vera@example.com")).attempts >= 2)

        await eventually(retried)
        first = await item("vera@example.com")
        assert first.sent_at is None and first.failed_at is None
        assert "ConnectionRefusedError" in first.last_error
        inbox = Inbox()
        inbox.refuse.add("nobody@example.com")
        async with smtp_server(port, inbox):

            async def recorded_sent() -> bool:
                # The mail server has it a moment before the outbox records it as sent.
                return bool((await item("vera@example.com")).sent_at)

            await eventually(recorded_sent)
            assert [m["To"] for m in inbox.messages] == ["vera@example.com"]
            sent = await item("vera@example.com")
            assert sent.attempts >= 2
            # A recipient the mail server refuses for good (550) is not tried again.
            await vera.send("transcript", email="nobody@example.com")
            await vera.expect("transcript_queued")

            async def given_up() -> bool:
                return bool((await item("nobody@example.com")).failed_at is not None)

            await eventually(given_up)
            refused = await item("nobody@example.com")
            assert refused.attempts == 1 and "550" in refused.last_error
            emails = srv.hub.metrics.emails
            assert (emails["queued"], emails["sent"], emails["failed"]) == (2, 1, 1)
            assert emails["retried"] == sent.attempts
            # Failed for good, the other sent: nothing is pending, nothing will be tried again.
            assert await store.outbox_next_due() is None
            assert len(inbox.messages) == 1


async def test_logs_hold_no_address_and_no_message_text(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    """DESIGN §10: nothing logged at INFO or above holds an e-mail address or a word of the
    conversation — over an attempt that fails, its retry, a send and a refusal whose reply quotes
    the address. The log names the outbox item and its conversation instead; the whole reason
    is at DEBUG."""
    caplog.set_level(logging.DEBUG)
    async with chat(mail_config(port)) as (srv, vera, bruno):
        cid = (await ended_conversation(srv, vera, bruno))["conversation_id"]
        await vera.send("transcript", email="vera@example.com")
        await vera.expect("transcript_queued")

        async def tried() -> bool:
            return bool((await srv.hub.store.outbox_items(cid))[0].attempts)

        await eventually(tried)  # nothing listens on the port yet
        inbox = Inbox()
        inbox.refuse.add("nobody@example.com")
        async with smtp_server(port, inbox):
            await eventually(lambda: len(inbox.messages) == 1)
            await vera.send("transcript", email="nobody@example.com")
            await vera.expect("transcript_queued")

            async def given_up() -> bool:
                return any(i.failed_at for i in await srv.hub.store.outbox_items(cid))

            await eventually(given_up)
    vera_item, nobody_item = (i.id for i in await srv.hub.store.outbox_items(cid))
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("omni", "admin_api")]
    shown = [logging.Formatter().format(r) for r in ours if r.levelno >= logging.INFO]
    private = ("@example.com", "invoice", "Let me check", "One moment", "Hello!")
    assert not [line for line in shown for word in private if word in line]
    assert f"outbox: item {vera_item} (conversation {cid}) failed (ConnectionRefusedError" in (
        "\n".join(shown)
    )
    assert f"outbox: item {vera_item} (conversation {cid}) sent" in shown
    assert (
        f"outbox: item {nobody_item} (conversation {cid}) failed after 1 attempt(s): "
        "SMTPRecipientsRefused 550"
    ) in shown
    debug = [r.getMessage() for r in ours if r.levelno == logging.DEBUG]
    assert any("<nobody@example.com>: no such user here" in line for line in debug)


async def test_a_queued_transcript_survives_a_restart(port: int) -> None:
    store = MemoryStore()
    config = mail_config(port, retry_seconds=60)
    async with chat(config, store) as (srv, vera, bruno):
        started = await ended_conversation(srv, vera, bruno)
        await vera.send("transcript", email="vera@example.com")
        await vera.expect("transcript_queued")
        cid = started["conversation_id"]

        async def tried() -> bool:
            return bool((await store.outbox_items(cid))[0].attempts)

        await eventually(tried)  # the mail server is down: retried in a minute
    [pending] = await store.outbox_items(cid)
    assert pending.sent_at is None and pending.attempts == 1
    # The server comes back two minutes later, and so does the mail server: the retry is due.
    later = Clock(datetime.now(UTC) + timedelta(minutes=2))
    async with (
        smtp_server(port) as inbox,
        open_server(config, store=store, clock=later, host="127.0.0.1", ws_port=0, http=False),
    ):
        await eventually(lambda: len(inbox.messages) == 1)
        assert inbox.messages[0]["To"] == "vera@example.com"


async def test_an_item_that_cannot_make_an_email_fails_alone(port: int) -> None:
    """A broken outbox item is marked failed; the worker and the server go on."""
    async with (
        smtp_server(port) as inbox,
        chat(mail_config(port)) as (srv, vera, bruno),
    ):
        store = srv.hub.store
        now = srv.hub.clock.now()
        assert await store.enqueue("email", "broken", None, {"subject": "no recipient"}, now)
        assert await store.enqueue("fax", "odd", None, {"to": "+55"}, now)
        assert srv.outbox is not None
        srv.outbox.wake()

        async def both_failed() -> bool:
            return all(i.failed_at is not None for i in await store.outbox_items())

        await eventually(both_failed)
        broken, odd = await store.outbox_items()
        assert broken.last_error is not None and "bad payload" in broken.last_error
        assert odd.last_error == "unknown kind 'fax'"
        await ended_conversation(srv, vera, bruno)
        await vera.send("transcript", email="vera@example.com")
        await vera.expect("transcript_queued")
        await eventually(lambda: len(inbox.messages) == 1)


async def test_the_admin_api_shows_what_became_of_the_emails(port: int) -> None:
    """Support staff see, on the conversation, each transcript e-mail and its fate."""
    config = with_items(mail_config(port), api_token("root", "admin-secret-token-Rk6Lx1Vp9Nq"))
    inbox = Inbox()
    inbox.refuse.add("nobody@example.com")
    async with (
        smtp_server(port, inbox),
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
        connect_tcp(f"{srv.ws_url}/ws/operator") as bruno,
        httpx.AsyncClient(
            base_url=srv.http_url,
            headers={"Authorization": "Bearer admin-secret-token-Rk6Lx1Vp9Nq"},
        ) as http,
    ):
        cid = (await ended_conversation(srv, vera, bruno))["conversation_id"]
        before = (await http.get(f"/api/v1/conversations/{cid}")).json()
        assert before["emails"] == []
        for address in ("vera@example.com", "nobody@example.com"):
            await vera.send("transcript", email=address)
            await vera.expect("transcript_queued")

        async def settled() -> bool:
            r = await http.get(f"/api/v1/conversations/{cid}")
            return all(e["status"] != "pending" for e in r.json()["emails"])

        await eventually(settled)
        emails = (await http.get(f"/api/v1/conversations/{cid}")).json()["emails"]
        assert [(e["to"], e["status"], e["attempts"]) for e in emails] == [
            ("vera@example.com", "sent", 0),
            ("nobody@example.com", "failed", 1),
        ]
        assert emails[0]["sent_at"] is not None and emails[0]["last_error"] is None
        assert "550" in emails[1]["last_error"] and emails[1]["sent_at"] is None


# -- the e-mail's text (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("vera@example.com", True),
        ("Vera.Lopez+chat@mail.example.com.br", True),
        ("vera", False),
        ("vera@localhost", False),
        ("@example.com", False),
        ("vera@@example.com", False),
        ("vera@example.com, boss@example.com", False),
        ("vera@example.com\r\nBcc: x@y.com", False),
        ("Vera <vera@example.com>", False),
        ("v" * 250 + "@x.com", False),
    ],
)
def test_valid_email(address: str, ok: bool) -> None:
    from omni.domain.transcript import valid_email

    assert valid_email(address) is ok


def test_the_transcript_text() -> None:
    from zoneinfo import ZoneInfo

    from omni.domain import protocol as p
    from omni.domain.conversation import Status
    from omni.domain.model import Avatar, GroupLink, Service
    from omni.domain.transcript import render

    def at(hhmmss: str) -> datetime:
        return datetime.fromisoformat(f"2026-11-25T{hhmmss}Z")

    conv = make_conversation(42, Status.CLOSED, at=at("14:59:00"), visitor="Vera")
    conv.ticket = "2026-000042"
    service = Service(25, "Support", (GroupLink(1),), closing_message="Thanks!")
    summary = conv.summary()
    events: list[p.Event] = [
        p.Assigned("c42", 1, p.OperatorRef(1, "Alice"), Avatar("Support"), summary),
        p.Message("c42", 2, "c42-2", p.Author("visitor", "Vera"), "Hi\r\nthere", at("15:00:05")),
        p.Transferred("c42", 3, p.TransferTarget("group", 2, "Billing"), "transfer"),
        p.Message("c42", 4, "c42-4", p.Author("operator", "Bruno", 2), "Hello", at("15:01:00")),
        p.Message(
            "c42",
            5,
            "c42-5",
            p.Author("operator", "Bruno", 2),
            "invoice.pdf",
            at("15:02:00"),
            p.AttachmentRef("u1", "invoice.pdf", 48213, "application/pdf"),
        ),
        p.Ended("c42", 6, "operator"),
    ]
    mail = render(conv, service, events, ZoneInfo("America/Sao_Paulo"))
    assert mail.subject == "Your conversation 2026-000042 with Support"
    assert mail.body == (
        "Support — conversation 2026-000042\n"
        "Started 2026-11-25 11:59 (America/Sao_Paulo)\n"
        "\n"
        "[2026-11-25 12:00] Vera: Hi\n"
        "    there\n"
        "— transferred to Billing —\n"
        "[2026-11-25 12:01] Bruno: Hello\n"
        "[2026-11-25 12:02] Bruno: [file: invoice.pdf, 48.2 kB]\n"
        "\n"
        "Thanks!\n"
    )
    # With download links (a server that takes files and knows its address): each file's.
    linked = render(
        conv,
        service,
        events,
        ZoneInfo("America/Sao_Paulo"),
        lambda id: f"https://chat.example/api/v1/attachments/{id}?expires=1&signature=s",
    )
    assert (
        "[2026-11-25 12:02] Bruno: [file: invoice.pdf, 48.2 kB] "
        "https://chat.example/api/v1/attachments/u1?expires=1&signature=s\n"
    ) in linked.body
