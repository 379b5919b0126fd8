"""The outbox worker (DESIGN §2): delivers what the store's outbox holds — e-mails, webhooks —
at least once, through one :class:`Sender` per kind.

Rules:

* An item is in the store before anybody is told it is queued (``Store.enqueue``, or a
  conversation's write for webhooks); this worker only reads due items and records what became
  of them, each attempt with it. A server that stops or crashes between sending and recording
  sends the item again after its restart: at least once, never lost.
* Order: the store offers only the oldest pending webhook delivery of each subscription and
  conversation, so the next waits until that one is sent or parked. Items under way are not
  taken again; at most ``concurrency`` are under way at once.
* More than one node: the worker *claims* what it takes (``Store.outbox_claim``, as
  ``claimant``, for ``claim_seconds``), so two nodes' workers never hold the same item and a
  claimed delivery holds back the next of its conversation; a node that dies loses its claims
  when they run out. With ``poll`` it also looks every ``poll`` seconds for items another node
  made due (until notices wake it, docs/scale-out.md).
* A failure is retried after the sender's :class:`RetryPolicy`: a first wait doubling with each
  attempt up to a maximum, less a random share (``jitter``) drawn from the injected ``random``
  source — so tests are deterministic. A permanent refusal (an SMTP 5xx) or the
  ``max_attempts``-th failure marks the item failed ("parked" for webhooks), logged with the
  reason; the admin API puts a parked webhook delivery back.
* The worker sleeps until the next item is due, or until :meth:`Outbox.wake` says that one was
  queued. Dates come from the hub's :class:`~omni.clock.Clock`, so ``MockClock`` drives it.
* A store that fails is logged and tried again after ``store_retry`` seconds; the worker never
  takes the server down. Kinds this server is not set up to send (``idle``: e-mails without
  ``[server.smtp]``) stay pending; an unknown kind fails.
* Logs name an item by its id, its conversation's id and its webhook, never by its recipient,
  its dedupe key (which may hold an address) or its content; a failure is logged by its kind
  and code only (a mail server's reply often quotes the address). The whole reason is kept
  with the item (``last_error``, shown to administrators by the API) and logged at DEBUG.
"""

from __future__ import annotations

import logging
import math
import smtplib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import trio

from omni.settings import OutboxSettings, SmtpSettings
from omni.store import OutboxAttempt, OutboxItem, Store, StoreError

log = logging.getLogger(__name__)

#: The longest wait between two attempts of one e-mail, seconds.
MAX_BACKOFF = 3600.0
#: How often the backlog (pending items by kind, a metric) is counted, seconds.
BACKLOG_SECONDS = 15.0
#: Items the retention job deletes in one batch (one transaction).
PURGE_BATCH = 500


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again, and when to give up."""

    #: The wait after the first failure, seconds; it doubles with each further one…
    first: float
    #: … up to this.
    maximum: float
    #: Failed attempts after which the item is given up on.
    max_attempts: int
    #: The share of a wait that may be taken off at random (0: none, 1: all of it).
    jitter: float = 0.0

    def wait(self, attempts: int, draw: float) -> float:
        """Seconds to wait after ``attempts`` failed attempts; ``draw`` in [0, 1) from the
        random source."""
        base = min(self.first * 2.0 ** max(attempts - 1, 0), self.maximum)
        return base * (1.0 - self.jitter * draw)


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt."""

    delivered: bool
    #: The whole reason (kept with the item, shown to administrators); None when delivered.
    error: str | None = None
    #: What a log line above DEBUG may say of the failure (no address, no content).
    summary: str | None = None
    #: The receiver's HTTP status (webhooks).
    status_code: int | None = None
    #: Trying again cannot help.
    permanent: bool = False


class Sender(Protocol):
    """Delivers the items of one kind."""

    @property
    def kind(self) -> str: ...

    @property
    def retry(self) -> RetryPolicy: ...

    async def deliver(self, item: OutboxItem) -> Outcome:
        """One attempt; raises nothing it expects (a refusal is an :class:`Outcome`)."""
        ...


# -- e-mails ------------------------------------------------------------------------------------


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


class EmailSender:
    """``email`` items (F14: transcripts) through a :class:`Mailer`, in a worker thread."""

    kind = "email"

    def __init__(self, mailer: Mailer, settings: SmtpSettings, now: Callable[[], datetime]):
        self.mailer = mailer
        self.settings = settings
        self.now = now
        self.retry = RetryPolicy(settings.retry_seconds, MAX_BACKOFF, settings.max_attempts)

    async def deliver(self, item: OutboxItem) -> Outcome:
        try:
            message = email_message(item.payload, self.settings.sender, self.now())
        except (KeyError, TypeError, ValueError) as exc:
            # A payload that cannot make an e-mail never will: do not retry it.
            return Outcome(
                False,
                f"bad payload: {exc!r}"[:500],
                f"makes no e-mail ({type(exc).__name__})",
                permanent=True,
            )
        try:
            # The thread is abandoned on cancellation (the server stopping): the item is then
            # neither sent nor failed, and is tried again after a restart.
            with trio.fail_after(self.settings.timeout * 2 + 5):
                await trio.to_thread.run_sync(self.mailer.send, message, abandon_on_cancel=True)
        except (OSError, smtplib.SMTPException, trio.TooSlowError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:500]
            return Outcome(False, reason, summary(exc), permanent=permanent(exc))
        return Outcome(True)


# -- the worker ---------------------------------------------------------------------------------


class Outbox:
    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        senders: Sequence[Sender],
        *,
        random: Callable[[], float],
        counters: dict[str, dict[str, int]] | None = None,
        backlog: dict[str, int] | None = None,
        idle: Collection[str] = (),
        concurrency: int = 8,
        store_retry: float = 30.0,
        claimant: str = "omni",
        claim_seconds: float = 300.0,
        poll: float | None = None,
    ) -> None:
        """``random``: draws in [0, 1) for the jitter; ``counters``: outcomes (``sent``,
        ``retried``, ``failed``) by kind, for the metrics; ``backlog``: filled with the
        pending items by kind; ``idle``: kinds left pending (no sender here)."""
        self.store = store
        self.now = now
        self.senders = {s.kind: s for s in senders}
        self.random = random
        self.counters = counters if counters is not None else {}
        self.backlog = backlog if backlog is not None else {}
        self.concurrency = concurrency
        self.store_retry = store_retry
        self.claimant = claimant
        self.claim_seconds = claim_seconds
        self.poll = math.inf if poll is None else poll
        #: The kinds taken from the store: every kind, unless some are left pending.
        self._kinds: list[str] | None = sorted(self.senders) if idle else None
        self._under_way: set[int] = set()
        self._wakeup = trio.Event()

    def wake(self) -> None:
        """Something was queued: look at the outbox now."""
        self._wakeup.set()

    def sends(self, kind: str) -> bool:
        return kind in self.senders

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._count_backlog)
            while True:
                wakeup = self._wakeup = trio.Event()
                delay = await self._dispatch(nursery)
                with trio.move_on_after(min(max(delay, 0.0), self.poll)):
                    await wakeup.wait()

    async def _dispatch(self, nursery: trio.Nursery) -> float:
        """Start what is due (as far as there is room); how long to sleep unless woken."""
        try:
            now = self.now()
            room = self.concurrency - len(self._under_way)
            if room <= 0:
                return math.inf  # an attempt that ends wakes the worker
            # Claimed: no other worker (on this node or another) takes them meanwhile.
            items = await self.store.outbox_claim(
                self.claimant, now, room, self.claim_seconds, self._kinds
            )
            fresh = [i for i in items if i.id not in self._under_way]
            for item in fresh[:room]:
                self._under_way.add(item.id)
                nursery.start_soon(self._attempt, item)
            if len(fresh) >= room:
                return math.inf  # full: an attempt that ends wakes the worker
            due = await self.store.outbox_next_due(self._kinds, after=now)
        except Exception as exc:
            # The store failing (or a fault here) must not take the server down: try again.
            log.error("outbox: %s; trying again", exc, exc_info=not isinstance(exc, StoreError))
            return self.store_retry
        return math.inf if due is None else (due - self.now()).total_seconds()

    async def _attempt(self, item: OutboxItem) -> None:
        try:
            await self._deliver(item)
        except Exception as exc:
            # The store failed to record the outcome: the item is still pending, and is tried
            # again (at least once) once the store answers.
            log.error("outbox: %s: %s", _name(item), exc, exc_info=not isinstance(exc, StoreError))
            await trio.sleep(self.store_retry)
        finally:
            self._under_way.discard(item.id)
            self.wake()

    async def _deliver(self, item: OutboxItem) -> None:
        sender = self.senders.get(item.kind)
        if sender is None:
            log.error("outbox: item %d has an unknown kind %r", item.id, item.kind)
            await self.store.outbox_failed(item.id, self.now(), f"unknown kind {item.kind!r}")
            self._count(item.kind, "failed")
            return
        at, started = self.now(), trio.current_time()
        outcome = await sender.deliver(item)
        attempt = OutboxAttempt(
            at, round(trio.current_time() - started, 6), outcome.status_code, outcome.error
        )
        if outcome.delivered:
            await self.store.outbox_sent(item.id, self.now(), attempt)
            self._count(item.kind, "sent")
            log.info("outbox: %s sent", _name(item))
            return
        reason = outcome.error or "failed"
        attempts = item.attempts + 1
        log.debug("outbox: item %d, attempt %d: %s", item.id, attempts, reason)
        policy = sender.retry
        if outcome.permanent or attempts >= policy.max_attempts:
            log.error(
                "outbox: %s failed after %d attempt(s): %s",
                _name(item),
                attempts,
                outcome.summary or reason,
            )
            await self.store.outbox_failed(item.id, self.now(), reason, attempt)
            self._count(item.kind, "failed")
            return
        wait = policy.wait(attempts, self.random())
        log.warning(
            "outbox: %s failed (%s); retrying in %.1f s",
            _name(item),
            outcome.summary or reason,
            wait,
        )
        await self.store.outbox_retry(
            item.id, self.now() + timedelta(seconds=wait), reason, attempt
        )
        self._count(item.kind, "retried")

    async def _count_backlog(self) -> None:
        while True:
            try:
                counted = await self.store.outbox_backlog()
            except Exception as exc:
                log.debug("outbox: the backlog could not be counted: %s", exc)
            else:
                self.backlog.clear()
                self.backlog.update(counted)
            await trio.sleep(BACKLOG_SECONDS)

    def _count(self, kind: str, outcome: str) -> None:
        counts = self.counters.setdefault(kind, {})
        counts[outcome] = counts.get(outcome, 0) + 1


# -- retention ----------------------------------------------------------------------------------


class Retention:
    """The outbox's clean-up job: items sent or failed (parked) more than
    ``retention_days`` ago are deleted with their attempts, in batches of ``batch``; pending
    and claimed items never are. Dates come from the hub's clock, the period from trio's, so
    ``MockClock`` drives it. Several nodes may run it at once (each batch skips the others')."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        settings: OutboxSettings,
        *,
        batch: int = PURGE_BATCH,
    ) -> None:
        self.store = store
        self.now = now
        self.settings = settings
        self.batch = batch
        #: Items deleted since the start.
        self.deleted = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep now, then every ``sweep_seconds``, until cancelled. It keeps no state: after
        a restart the first sweep finds whatever the last run left."""
        task_status.started()
        if self.settings.retention_days is None:
            return
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                log.error(
                    "outbox: the retention pass failed (%s); next one in %.0f s",
                    exc,
                    self.settings.sweep_seconds,
                    exc_info=not isinstance(exc, StoreError),
                )
            await trio.sleep(self.settings.sweep_seconds)

    async def sweep(self) -> int:
        """One pass: delete what is past the retention, batch after batch until a batch is not
        full. How many items were deleted."""
        days = self.settings.retention_days
        if days is None:
            return 0
        before = self.now() - timedelta(days=days)
        deleted = 0
        while True:
            count = await self.store.outbox_purge(before, self.batch)
            deleted += count
            if count < self.batch:
                break
        self.deleted += deleted
        if deleted:
            log.info("outbox: deleted %d items sent or failed over %d days ago", deleted, days)
        return deleted


def _name(item: OutboxItem) -> str:
    """An item as the log names it: id, conversation, webhook."""
    if item.subscription is not None and item.kind == "channel":
        # The subscription of a channel's reply is "channel:<id>".
        return f"item {item.id} (conversation {item.conversation_id}, {item.subscription})"
    if item.subscription is not None:
        return f"item {item.id} (conversation {item.conversation_id}, webhook {item.subscription})"
    return f"item {item.id} (conversation {item.conversation_id})"
