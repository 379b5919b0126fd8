"""Storage: one :class:`Store` protocol; ``MemoryStore`` now, ``PostgresStore`` beside it.

Rules of this package:

* Every write a conversation makes in one step goes through one :meth:`Store.write` call; when it
  returns, the write is durable (for the memory store: recorded). Callers release acks and
  deliveries only after it returns.
* A conversation's events are kept with their ``seq``; ``(conversation_id, seq)`` is unique and
  an event is never rewritten.
* Stores keep the hash of a resume token, never the token; the same for sign-in sessions.
* The outbox (e-mails, webhooks) is delivered at least once. A webhook delivery is queued in
  the write of the conversation step that made its event (:attr:`Write.outbox`): stored with
  the event or not at all. Deliveries of one subscription and one conversation go in order:
  :meth:`Store.outbox_due` offers only the oldest pending one of each (its *head*).
* Attachments: the store keeps their metadata; the bytes are in a file store
  (``omni.attachments``), named by ``file_key``, which several rows may share.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from omni.domain.attachments import Attachment
from omni.domain.configuration import ConfigItem
from omni.domain.conversation import Conversation
from omni.domain.protocol import isoformat
from omni.domain.reports import Pause

__all__ = [
    "Attachment",
    "AttachmentClaimFailed",
    "AuditEntry",
    "ConfigChange",
    "ConfigItem",
    "ConversationQuery",
    "OutboxAttempt",
    "OutboxEntry",
    "OutboxItem",
    "Pause",
    "SignInSession",
    "Store",
    "StoreError",
    "StoredEvent",
    "Write",
    "page_cursor",
    "parse_cursor",
]


class StoreError(Exception):
    """A write or read the store could not do; the message says what to do about it."""


class AttachmentClaimFailed(StoreError):
    """A write claimed an attachment that is unknown or claimed already — a pending upload the
    clean-up job deleted after the caller looked it up, say. Nothing of the write was stored;
    the write's neighbours in a batch are not affected."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    conversation_id: str
    seq: int
    kind: str
    audience: str
    #: The frame exactly as it was delivered (JSON text); replays send it as it is.
    frame: str
    #: For messages: (author key, client_id) that made the send idempotent.
    client_key: tuple[str, str] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The frame decoded (for transcripts and tests; never on the delivery path)."""
        decoded: dict[str, Any] = msgspec.json.decode(self.frame)
        return decoded


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """Create/replace (``after`` set) or delete (``after`` None) one resource, audited."""

    kind: str
    key: str
    after: dict[str, Any] | None
    before: dict[str, Any] | None
    actor: str
    at: datetime

    @property
    def action(self) -> str:
        if self.after is None:
            return "delete"
        return "create" if self.before is None else "update"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    kind: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ConversationQuery:
    """Filters for listing conversations, newest first; ``cursor`` is the (created_at, id) of
    the last conversation of the previous page."""

    status: str | None = None
    service_id: int | None = None
    group_id: int | None = None
    operator_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    search: str | None = None
    cursor: tuple[datetime, str] | None = None
    limit: int = 50
    #: An operator API token's view: when set, only conversations this operator handled or
    #: that belong to one of ``scope_service_ids`` (the services the operator's groups serve).
    scope_operator_id: int | None = None
    scope_service_ids: frozenset[int] = frozenset()


def page_cursor(conv: Conversation) -> str:
    """The cursor that continues a listing after ``conv`` (ConversationQuery.cursor's text)."""
    return f"{isoformat(conv.created_at)}|{conv.id}"


#: The times a cursor (or any time a client gives) may name: beyond them a database's arithmetic
#: overflows, and no conversation is there anyway.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def parse_cursor(text: str) -> tuple[datetime, str] | None:
    """:func:`page_cursor`'s text back as ``(created_at, id)``; None if it is not one (or names
    a time outside :data:`EARLIEST` to :data:`LATEST`)."""
    created, _, conversation_id = text.partition("|")
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        return None
    if not conversation_id or at.tzinfo is None or "\x00" in conversation_id:
        return None
    if not EARLIEST <= at <= LATEST:
        return None
    return at, conversation_id


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """Something to deliver outside (an e-mail, a webhook), at least once (DESIGN §2, outbox).

    Pending until ``sent_at`` or ``failed_at`` (failed: given up on, a webhook's "parked")."""

    id: int
    kind: str
    dedupe_key: str
    conversation_id: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    last_error: str | None = None
    #: A webhook's subscription (its id): deliveries of one subscription and one conversation
    #: go in order. None for e-mails.
    subscription: str | None = None
    #: The exact bytes to send (a webhook's JSON body), as text; None for e-mails.
    body: str | None = None

    @property
    def status(self) -> str:
        return "sent" if self.sent_at else "failed" if self.failed_at else "pending"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox item queued by a conversation's write (:attr:`Write.outbox`); an entry whose
    ``dedupe_key`` is in the outbox already is not queued again."""

    kind: str
    dedupe_key: str
    conversation_id: str
    payload: dict[str, Any]
    created_at: datetime
    subscription: str | None = None
    body: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxAttempt:
    """One attempt to deliver an outbox item: when, how long it took (seconds), the answer's
    HTTP status (webhooks) and what went wrong (None: it was delivered)."""

    at: datetime
    duration: float
    status_code: int | None = None
    error: str | None = None


#: The states :meth:`Store.outbox_deliveries` filters on.
OUTBOX_STATES = ("pending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class SignInSession:
    """A person's session (``omni.accounts``): the SHA-256 of its token, the user it acts for
    and the user's generation it was opened in, and its lifetime."""

    token_hash: str
    user_id: str
    generation: int
    created_at: datetime
    expires_at: datetime


@dataclass(slots=True)
class Write:
    """What one step of one conversation changes."""

    conversation: Conversation | None = None
    events: list[StoredEvent] = field(default_factory=list)
    survey: dict[str, Any] | None = None
    survey_skipped: bool = False
    #: Pending attachments its messages carry: (attachment id, claimed at). Claimed in the same
    #: transaction as the events; one that is unknown or claimed already fails the whole write
    #: with :class:`AttachmentClaimFailed`.
    claims: list[tuple[str, datetime]] = field(default_factory=list)
    #: Outbox items its events make (webhooks), queued in the same transaction as the events.
    #: Their conversation must be stored (by this write or before).
    outbox: list[OutboxEntry] = field(default_factory=list)


class Store(Protocol):
    async def next_ticket(self, year: int) -> int:
        """The next ticket number of ``year``: 1, 2, 3, … never reused."""
        ...

    async def write(self, write: Write) -> None: ...

    async def load_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with its ``last_seq`` and its seen ``client_ids`` restored."""
        ...

    async def find_by_token_hash(self, token_hash: str) -> str | None: ...

    async def events_after(
        self, conversation_id: str, after_seq: int, limit: int | None = None
    ) -> list[StoredEvent]:
        """The events with ``seq > after_seq``, in order; at most ``limit`` of them (a page)."""
        ...

    async def survey(self, conversation_id: str) -> dict[str, Any] | None: ...

    async def open_conversations(self) -> list[Conversation]:
        """Conversations to put back into routing at start-up (queued, offered, active, waiting
        for the survey), in queue order; out-of-hours ones are restored only when reached."""
        ...

    async def list_conversations(self, query: ConversationQuery) -> list[Conversation]:
        """Newest first, at most ``query.limit``."""
        ...

    # -- messaging channels (issue 17) ------------------------------------------------------

    async def channel_conversation(self, channel_id: str, user: str) -> str | None:
        """The newest conversation of the channel's ``user`` that is not closed or abandoned
        (out of hours included), if any."""
        ...

    async def inbound_seen(self, channel_id: str, message_id: str) -> bool:
        """Whether the channel took the platform's message ``message_id`` already."""
        ...

    async def record_inbound(
        self, channel_id: str, message_id: str, conversation_id: str, at: datetime
    ) -> None:
        """The channel took ``message_id`` into ``conversation_id`` (again: nothing changes)."""
        ...

    async def conversations_created_between(
        self, start: datetime, end: datetime
    ) -> list[Conversation]:
        """Every conversation created in [start, end), for reports."""
        ...

    # -- configuration ----------------------------------------------------------------------

    async def config_items(self) -> list[ConfigItem]: ...

    async def change_config(self, change: ConfigChange) -> AuditEntry:
        """Apply the change and record it in the audit log, atomically."""
        ...

    async def deleted_config(self, kind: str, key: str) -> dict[str, Any] | None:
        """The body the item had when it was last deleted (from the audit log); None if it was
        never deleted. A deleted service's open conversations run on under that definition,
        across restarts too."""
        ...

    async def audit_entries(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first."""
        ...

    # -- sign-in sessions -------------------------------------------------------------------

    async def add_session(self, session: SignInSession) -> None:
        """Keep a new session, durably before it returns; sessions expired at its
        ``created_at`` are forgotten on the way."""
        ...

    async def find_session(self, token_hash: str) -> SignInSession | None:
        """The session of this token hash, expired or not (the caller has the clock)."""
        ...

    async def end_sessions(self, user_id: str) -> int:
        """Forget every session of ``user_id``; how many there were."""
        ...

    # -- the audit log's actions ------------------------------------------------------------

    async def record_action(
        self, at: datetime, actor: str, action: str, kind: str, key: str, detail: dict[str, Any]
    ) -> AuditEntry:
        """Record in the audit log an action that changed no configuration (a supervisor's
        transfer, say): ``detail`` is kept as its ``after``, ``before`` is null."""
        ...

    # -- operators' pauses (issue 14) -------------------------------------------------------

    async def pause_started(self, operator_id: int, reason: str | None, at: datetime) -> None:
        """The operator paused at ``at`` (``reason``: a pause reason's id, or None); a pause of
        theirs still open ends at ``at`` first (a change of reason). Durable when it returns."""
        ...

    async def pause_ended(self, operator_id: int, at: datetime) -> None:
        """The operator's open pause, if any, ends at ``at`` (never before it started)."""
        ...

    async def pauses_ongoing(self, at: datetime) -> None:
        """Every open pause is known to go on at ``at`` (the heartbeat): a pause a crash left
        open ends there at the next start-up (:meth:`end_interrupted_pauses`)."""
        ...

    async def end_interrupted_pauses(self) -> int:
        """At start-up: end every pause still open (left by a server that stopped without
        ending it) at the last instant it was known to go on; how many there were."""
        ...

    async def pauses_between(self, start: datetime, end: datetime) -> list[Pause]:
        """The pauses that overlap ``[start, end)``, open ones too (``end`` None), by start.
        A pause of no length overlaps nothing."""
        ...

    # -- outbox -----------------------------------------------------------------------------

    async def enqueue(
        self,
        kind: str,
        dedupe_key: str,
        conversation_id: str | None,
        payload: dict[str, Any],
        at: datetime,
    ) -> bool:
        """Store an item to deliver, due at once; False (nothing stored) if ``dedupe_key`` is
        already in the outbox. Stored durably before it returns."""
        ...

    async def outbox_due(
        self, at: datetime, limit: int, kinds: Collection[str] | None = None
    ) -> list[OutboxItem]:
        """Pending items due at ``at`` (of ``kinds``, if given), the longest due first — only
        the oldest pending item of each subscription and conversation (its head): the next
        waits until that one is sent or failed."""
        ...

    async def outbox_next_due(
        self, kinds: Collection[str] | None = None, after: datetime | None = None
    ) -> datetime | None:
        """When the earliest pending head (of ``kinds``) is due — the earliest due after
        ``after``, if given; None if there is none."""
        ...

    async def outbox_sent(
        self, item_id: int, at: datetime, attempt: OutboxAttempt | None = None
    ) -> None:
        """Delivered (``attempt``: recorded with it, in the same transaction)."""
        ...

    async def outbox_retry(
        self,
        item_id: int,
        next_attempt_at: datetime,
        error: str,
        attempt: OutboxAttempt | None = None,
    ) -> None:
        """One more failed attempt; try again at ``next_attempt_at``."""
        ...

    async def outbox_failed(
        self, item_id: int, at: datetime, error: str, attempt: OutboxAttempt | None = None
    ) -> None:
        """One more failed attempt, and the last: the item is not tried again (unless
        :meth:`outbox_redeliver` puts it back)."""
        ...

    async def outbox_items(self, conversation_id: str | None = None) -> list[OutboxItem]:
        """Every item (of one conversation), oldest first: for inspection and limits."""
        ...

    async def outbox_item(self, item_id: int) -> OutboxItem | None: ...

    async def outbox_deliveries(
        self,
        subscription: str,
        state: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[OutboxItem]:
        """A subscription's items, newest first: in ``state`` (pending, sent, failed) if given,
        with an id below ``before_id`` if given; at most ``limit``."""
        ...

    async def outbox_attempts(self, item_ids: Collection[int]) -> dict[int, list[OutboxAttempt]]:
        """The recorded attempts of each item (oldest first); items with none are left out."""
        ...

    async def outbox_redeliver(self, item_ids: Collection[int], at: datetime) -> list[int]:
        """Put failed items back: pending, due at ``at``, with a new round of attempts (their
        past attempts stay recorded). Returns those that were failed (others are left alone)."""
        ...

    async def outbox_backlog(self) -> dict[str, int]:
        """Pending items by kind (for the metrics)."""
        ...

    # -- attachments --------------------------------------------------------------------------

    async def add_attachment(self, attachment: Attachment) -> None:
        """Keep an upload's metadata (pending unless ``claimed_at``), durably before it
        returns. Its conversation must be stored."""
        ...

    async def attachment(self, attachment_id: str) -> Attachment | None: ...

    async def attachment_usage(self, conversation_id: str) -> tuple[int, int]:
        """How many files the conversation carries (pending ones included), and their bytes."""
        ...

    async def expired_attachments(
        self, conversations_before: datetime | None, pending_before: datetime, limit: int
    ) -> list[Attachment]:
        """At most ``limit`` attachments to delete: every one of a conversation created before
        ``conversations_before`` (None: none by age), and the pending ones uploaded before
        ``pending_before``; oldest first."""
        ...

    async def delete_attachments(self, attachment_ids: list[str]) -> None:
        """Forget these attachments (unknown ids are ignored)."""
        ...

    async def files_in_use(self, file_keys: list[str]) -> set[str]:
        """Which of ``file_keys`` some attachment still names."""
        ...

    async def attachment_totals(self) -> tuple[int, int]:
        """How many attachments are kept, and their bytes (for the metrics)."""
        ...

    async def attachment_figures(
        self, start: datetime, end: datetime
    ) -> dict[int, tuple[int, int]]:
        """For reports: the files sent (claimed by a message) in the conversations created in
        [start, end), and their bytes, by the conversation's service (services with none are
        left out)."""
        ...
