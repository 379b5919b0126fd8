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
* More than one node (DESIGN §11): nodes register and beat (:meth:`Store.register_node`);
  resources are owned by lease, and a write that carries a :class:`Fence` commits only while
  its lease is current — else it fails with :class:`FencedOut` and nothing of it is stored.
  Lease and claim lifetimes run on the *store's* clock (PostgreSQL's ``now()``), never on a
  node's: nodes' clocks disagree, the database's is one. Callers give durations, not instants.
* Notices (:attr:`Write.notices`, :meth:`Store.notify`) are sent when their write commits,
  never before and never for a write that failed; they carry ids, the bodies are in the
  tables. A listener that may have missed some receives :class:`Resync` and reads the tables.
* Configuration changes (:meth:`Store.change_config`) are made one at a time, whichever node
  makes them, and each commits a notice on :data:`CONFIG_CHANNEL`; one made against an older
  version than the stored one is refused (:class:`StaleConfiguration`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
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
    "ADOPT_CHANNEL",
    "CONFIG_CHANNEL",
    "Attachment",
    "AttachmentClaimFailed",
    "AuditEntry",
    "ConfigChange",
    "ConfigItem",
    "ConversationQuery",
    "Fence",
    "FencedOut",
    "Lease",
    "NodeNameInUse",
    "NodeRecord",
    "Notice",
    "OutboxAttempt",
    "OutboxEntry",
    "OutboxItem",
    "Pause",
    "RelayItem",
    "Resync",
    "SignInSession",
    "StaleConfiguration",
    "Store",
    "StoreError",
    "StoredEvent",
    "Subscription",
    "Write",
    "page_cursor",
    "parse_cursor",
    "relay_channel",
]


class StoreError(Exception):
    """A write or read the store could not do; the message says what to do about it."""


class AttachmentClaimFailed(StoreError):
    """A write claimed an attachment that is unknown or claimed already — a pending upload the
    clean-up job deleted after the caller looked it up, say. Nothing of the write was stored;
    the write's neighbours in a batch are not affected."""


class FencedOut(StoreError):
    """A fenced write (:attr:`Write.fence`) whose lease is no longer current: another node took
    the resource, or the lease ran out. Nothing of the write was stored; its writer is no
    longer the owner and must stop acting as one (its neighbours in a batch are not affected)."""


class NodeNameInUse(StoreError):
    """A node registered under a name that a live node (one with a recent heartbeat) holds."""


class StaleConfiguration(StoreError):
    """A configuration change made against a version (:meth:`Store.config_version`) that is no
    longer the stored one: another node changed the configuration since. Nothing was stored;
    read the configuration again and validate the change against it."""


@dataclass(frozen=True, slots=True)
class Fence:
    """A write's condition: ``resource``'s lease is at ``epoch`` and has not run out."""

    resource: str
    epoch: int


#: The longest notice payload in bytes: PostgreSQL refuses 8000 and more.
MAX_NOTICE_BYTES = 7999
#: The longest channel name in bytes (a PostgreSQL identifier).
MAX_CHANNEL_BYTES = 63
#: Where every configuration change is notified (payload ``"<kind>:<audit entry id>"``).
CONFIG_CHANNEL = "omni_config"


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification on ``channel``: ids (``"conversation:c1:42"``), never bodies."""

    channel: str
    payload: str

    def __post_init__(self) -> None:
        if not 0 < len(self.channel.encode()) <= MAX_CHANNEL_BYTES or "\x00" in self.channel:
            raise ValueError(f"a channel name has 1 to {MAX_CHANNEL_BYTES} bytes, no NUL")
        if len(self.payload.encode()) > MAX_NOTICE_BYTES or "\x00" in self.payload:
            raise ValueError(f"a notice payload has at most {MAX_NOTICE_BYTES} bytes, no NUL")


@dataclass(frozen=True, slots=True)
class Resync:
    """In a listener's stream: notices may have been missed (the connection was lost and is
    back, or the listener fell behind). Read the tables again."""

    reason: str


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A registered node: its name, which start of it this is, and when it last beat (the
    store's clock). ``alive``: its heartbeat is within the expiry asked for."""

    name: str
    incarnation: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool


@dataclass(frozen=True, slots=True)
class RelayItem:
    """One item of a socket relayed between two nodes (docs/scale-out.md): the ``n``-th of its
    ``direction`` (``up``: from the node holding the client's socket to the node serving it;
    ``down``: back), an ``open`` (a JSON body: what the serving node needs of the socket), a
    ``frame`` (the websocket message, as is) or a ``close`` (JSON: code and reason)."""

    socket: str
    direction: str
    n: int
    kind: str
    body: str


#: Cluster mode: a conversation entered a group another node owns (payload: the group's id);
#: its owner adopts it at once rather than at its next heartbeat.
ADOPT_CHANNEL = "omni_adopt"


def relay_channel(node: str) -> str:
    """The notice channel of ``node``'s relayed sockets (a channel name has at most 63 bytes;
    a node's name may be longer)."""
    return "omni_relay_" + hashlib.sha256(node.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Lease:
    """Who owns ``resource`` (None: nobody since it was released) in its ``epoch``.

    ``remaining``: seconds the lease had left when the store read it (0 if it ran out), by the
    store's clock; a holder counts its own deadline from before it asked (docs/scale-out.md)."""

    resource: str
    owner: str | None
    epoch: int
    acquired_at: datetime
    expires_at: datetime
    remaining: float

    @property
    def held(self) -> bool:
        return self.owner is not None and self.remaining > 0

    @property
    def fence(self) -> Fence:
        return Fence(self.resource, self.epoch)


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
    #: The lease the writer holds as owner: checked in the write's transaction; a lease that is
    #: not current fails the write with :class:`FencedOut` (nothing stored).
    fence: Fence | None = None
    #: Sent when (and only if) the write commits.
    notices: list[Notice] = field(default_factory=list)


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

    async def open_conversation_places(self) -> list[tuple[str, int | None, int]]:
        """What :meth:`open_conversations` returns, as (id, group, service) only: cheap enough
        to ask at every heartbeat (cluster mode's adoption)."""
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

    async def config_version(self) -> int:
        """The configuration's version: the audit entry id of its last change (0: none yet).
        Read it *before* the items it stands for."""
        ...

    async def change_config(
        self, change: ConfigChange, expected_version: int | None = None
    ) -> AuditEntry:
        """Apply the change and record it in the audit log, atomically, with a notice on
        :data:`CONFIG_CHANNEL`; one change at a time. ``expected_version``: only if it is still
        the configuration's version, else :class:`StaleConfiguration` and nothing is stored.
        The returned entry's id is the new version."""
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

    async def outbox_purge(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` items sent or failed (parked) before ``before``, the
        longest finished first, with their recorded attempts; never a pending item, nor one
        claimed now. How many were deleted (retention, ``[server.outbox] retention_days``)."""
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

    # -- more than one node (issue 18, docs/scale-out.md) -------------------------------------

    async def register_node(self, name: str, expiry: float) -> NodeRecord:
        """Register a start of node ``name``: its next incarnation, started and beating now
        (the store's clock). :class:`NodeNameInUse` if a node of that name beat within the last
        ``expiry`` seconds (another process has the name)."""
        ...

    async def node_heartbeat(self, name: str, incarnation: int) -> bool:
        """The node beats now; False if ``incarnation`` is no longer the node's (it left, or
        another process registered the name since): it must stop acting as that node."""
        ...

    async def leave_node(self, name: str, incarnation: int) -> None:
        """The node stops: forget it, release its leases and its outbox claims, so that others
        need not wait for them to run out. Nothing if ``incarnation`` is not the node's."""
        ...

    async def nodes(self, expiry: float) -> list[NodeRecord]:
        """Every registered node by name, ``alive`` if it beat within ``expiry`` seconds."""
        ...

    async def acquire_lease(self, resource: str, owner: str, seconds: float) -> Lease | None:
        """Own ``resource`` for ``seconds`` (the store's clock) if nobody does — it was never
        leased, was released, or its lease ran out — in a new epoch, above every earlier one.
        None if it is held (by ``owner`` too: a holder renews)."""
        ...

    async def renew_lease(
        self, resource: str, owner: str, epoch: int, seconds: float
    ) -> Lease | None:
        """Extend ``owner``'s lease to ``seconds`` from now, if it is still at ``epoch`` (even
        if it ran out, as long as nobody took it since); None if it is not."""
        ...

    async def renew_leases(self, owner: str, held: Sequence[Fence], seconds: float) -> list[Lease]:
        """:meth:`renew_lease` each of ``held`` (resource, epoch) at once — one statement for
        a node's heartbeat; the leases renewed, by resource (those missing were not)."""
        ...

    async def release_lease(self, resource: str, owner: str, epoch: int) -> bool:
        """Give the resource up (its epoch is kept); False if ``owner`` did not hold it at
        ``epoch``."""
        ...

    async def leases(self, prefix: str = "") -> list[Lease]:
        """The leases whose resource starts with ``prefix``, by resource, released ones too."""
        ...

    async def outbox_claim(
        self,
        claimant: str,
        at: datetime,
        limit: int,
        seconds: float,
        kinds: Collection[str] | None = None,
    ) -> list[OutboxItem]:
        """Take up to ``limit`` of :meth:`outbox_due`'s items for ``claimant``, for ``seconds``
        (the store's clock): no other claimant gets an item while its claim lasts, and the next
        item of its subscription and conversation is not due before it is sent or failed.
        Recording an outcome (:meth:`outbox_sent`, …) ends the claim; a claimant that dies
        without one loses it when it runs out. Longest due first."""
        ...

    async def notify(self, channel: str, payload: str) -> None:
        """Send a notice now (outside any write)."""
        ...

    async def relay_send(self, node: str, items: Sequence[RelayItem]) -> None:
        """Store ``items`` for ``node`` and notify it (:func:`relay_channel`, one notice per
        socket, payload the socket id) in one transaction: a notice means the items are there."""
        ...

    async def relay_take(self, node: str, socket: str, direction: str) -> list[RelayItem]:
        """Remove and return what waits for ``node`` on ``socket`` in ``direction``, by ``n``."""
        ...

    async def relay_waiting(self, node: str) -> list[str]:
        """The sockets with items waiting for ``node`` (after a lost notice: a resync)."""
        ...

    async def relay_forget(self, socket: str) -> None:
        """Drop whatever is left of ``socket`` both ways (it closed)."""
        ...

    async def relay_sweep(self, seconds: float) -> int:
        """Drop items older than ``seconds`` (their sockets' nodes died); how many."""
        ...

    def listen(
        self, channels: Collection[str], *, buffer: int = 1024
    ) -> AbstractAsyncContextManager[Subscription]:
        """Receive the notices of ``channels`` committed from the moment the block is entered
        until it is left; at most ``buffer`` wait unread (then they are dropped for one
        :class:`Resync`)."""
        ...


class Subscription(Protocol):
    """What :meth:`Store.listen` yields: notices, and :class:`Resync` markers, in order."""

    async def receive(self) -> Notice | Resync: ...

    def __aiter__(self) -> Subscription: ...

    async def __anext__(self) -> Notice | Resync: ...
