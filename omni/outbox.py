"""The outbox worker (DESIGN §2): delivers what the store's outbox holds — e-mails — at least
once.

Rules:

* An item is in the store before anybody is told it is queued (``Store.enqueue``); this worker
  only reads due items and records what became of them. A server that stops or crashes between
  sending and recording sends the item again after its restart: at least once, never lost.
* Each attempt runs the blocking SMTP client of the standard library (:mod:`smtplib`) in a
  worker thread, bounded by the SMTP timeout. A failure is retried after ``retry_seconds``,
  doubling with each attempt up to an hour; a permanent refusal (an SMTP 5xx reply) or the
  ``max_attempts``-th failure marks the item failed, logged with the reason.
* The worker sleeps until the next item is due, or until :meth:`Outbox.wake` says that one was
  queued. Dates come from the hub's :class:`~omni.clock.Clock`, so ``MockClock`` drives it.
* A store that fails is logged and tried again after ``retry_seconds``; the worker never takes
  the server down.
* Logs name an item by its id and its conversation's id, never by its recipient, its dedupe key
  (which holds the address) or its text; a failure is logged by its kind and SMTP code only,
  since a mail server's reply often quotes the address. The whole reason is kept with the item
  (``last_error``, shown to administrators by the API) and logged at DEBUG.
"""

from __future__ import annotations

import logging
import math
import smtplib
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import trio

from omni.settings import SmtpSettings
from omni.store import OutboxItem, Store, StoreError

log = logging.getLogger(__name__)

#: Items taken from the store at a time.
BATCH = 20
#: The longest wait between two attempts of one item, seconds.
MAX_BACKOFF = 3600.0


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the mail system (blocking); raise when it was not accepted."""
        ...


class SmtpMailer:
    """An SMTP server (``[server.smtp]``), one connection per message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings

    def send(self, message: EmailMessage) -> None:
        s = self.settings
        with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
            if s.starttls:
                smtp.starttls()
            if s.username is not None:
                smtp.login(s.username, s.password or "")
            smtp.send_message(message)


def email_message(payload: dict[str, Any], sender: str, at: datetime) -> EmailMessage:
    """An outbox ``email`` item's payload (``to``, ``subject``, ``body``) as a message."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = payload["to"]
    message["Subject"] = payload["subject"]
    message["Date"] = format_datetime(at)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    message.set_content(payload["body"])
    return message


def summary(error: BaseException) -> str:
    """What a log line above DEBUG may say of a failed attempt: the error's kind and SMTP codes,
    not its text."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = sorted({code for code, _ in error.recipients.values()})
        return f"{type(error).__name__} {', '.join(map(str, codes))}"
    code = getattr(error, "smtp_code", None)
    if isinstance(code, int):
        return f"{type(error).__name__} {code}"
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"  # the mail server's, not the address
    return type(error).__name__


def permanent(error: BaseException) -> bool:
    """An SMTP refusal that trying again cannot fix (5xx)."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    code = getattr(error, "smtp_code", None)
    return isinstance(code, int) and code >= 500


class Outbox:
    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        mailer: Mailer,
        settings: SmtpSettings,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.store = store
        self.now = now
        self.mailer = mailer
        self.settings = settings
        #: Outcomes so far (``sent``, ``retried``, ``failed``), for the metrics.
        self.counters = counters if counters is not None else {}
        self._wakeup = trio.Event()

    def wake(self) -> None:
        """Something was queued: look at the outbox now."""
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            wakeup = self._wakeup = trio.Event()
            try:
                items = await self.store.outbox_due(self.now(), BATCH)
                for item in items:
                    await self._deliver(item)
                if len(items) == BATCH:
                    continue
                due = await self.store.outbox_next_due()
            except Exception as exc:
                # The store failing (or a fault here) must not take the server down: try again.
                log.error("outbox: %s; trying again", exc, exc_info=not isinstance(exc, StoreError))
                due = self.now() + timedelta(seconds=self.settings.retry_seconds)
            delay = math.inf if due is None else (due - self.now()).total_seconds()
            with trio.move_on_after(max(delay, 0.0)):
                await wakeup.wait()

    async def _deliver(self, item: OutboxItem) -> None:
        if item.kind != "email":
            log.error("outbox: item %d has an unknown kind %r", item.id, item.kind)
            await self._give_up(item, f"unknown kind {item.kind!r}")
            return
        try:
            message = email_message(item.payload, self.settings.sender, self.now())
        except (KeyError, TypeError, ValueError) as exc:
            # A payload that cannot make an e-mail never will: do not retry it.
            log.error(
                "outbox: item %d (conversation %s) makes no e-mail (%s)",
                item.id,
                item.conversation_id,
                type(exc).__name__,
            )
            await self._give_up(item, f"bad payload: {exc!r}"[:500])
            return
        try:
            # The thread is abandoned on cancellation (the server stopping): the item is then
            # neither sent nor failed, and is tried again after a restart.
            with trio.fail_after(self.settings.timeout * 2 + 5):
                await trio.to_thread.run_sync(self.mailer.send, message, abandon_on_cancel=True)
        except (OSError, smtplib.SMTPException, trio.TooSlowError) as exc:
            await self._failed(item, exc)
        else:
            await self.store.outbox_sent(item.id, self.now())
            self._count("sent")
            log.info("outbox: item %d (conversation %s) sent", item.id, item.conversation_id)

    async def _failed(self, item: OutboxItem, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}"[:500]
        attempts = item.attempts + 1
        log.debug("outbox: item %d, attempt %d: %s", item.id, attempts, reason)
        if permanent(error) or attempts >= self.settings.max_attempts:
            log.error(
                "outbox: item %d (conversation %s) failed after %d attempt(s): %s",
                item.id,
                item.conversation_id,
                attempts,
                summary(error),
            )
            await self._give_up(item, reason)
            return
        wait = min(self.settings.retry_seconds * 2 ** (attempts - 1), MAX_BACKOFF)
        log.warning(
            "outbox: item %d (conversation %s) failed (%s); retrying in %.0f s",
            item.id,
            item.conversation_id,
            summary(error),
            wait,
        )
        await self.store.outbox_retry(item.id, self.now() + timedelta(seconds=wait), reason)
        self._count("retried")

    async def _give_up(self, item: OutboxItem, reason: str) -> None:
        await self.store.outbox_failed(item.id, self.now(), reason)
        self._count("failed")

    def _count(self, outcome: str) -> None:
        self.counters[outcome] = self.counters.get(outcome, 0) + 1
