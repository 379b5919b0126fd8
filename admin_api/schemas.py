"""Response bodies of the admin API, as msgspec structs: they are encoded directly and their
JSON Schemas go into the OpenAPI document. Request bodies are the configuration entities
(``omni.domain.model``, with ``omni.config``'s inputs for secrets) plus the few below.
Conversations are shown in the protocol's one summary shape
(:class:`omni.domain.protocol.ConversationSummary`); times are ``datetime`` until msgspec
writes them (ISO 8601, UTC)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from omni.domain.model import PASSWORD_MAX, UserProfile
from omni.domain.protocol import ConversationSummary


class Health(msgspec.Struct):
    status: str
    conversations: int
    operators_online: int


class Problem(msgspec.Struct):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str


class ConversationPage(msgspec.Struct):
    items: list[ConversationSummary]
    #: Pass as ``cursor`` to get the next page; null on the last page.
    next_cursor: str | None


class EmailOut(msgspec.Struct):
    """A transcript e-mail of the conversation (F14) and what became of it."""

    to: str
    status: str  # pending | sent | failed
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None


class SurveyLinkOut(msgspec.Struct):
    """The link to a conversation's survey page (docs/pages.md, "The survey page")."""

    url: str
    #: When the link stops working: the survey's deadline.
    expires_at: datetime


class AttemptOut(msgspec.Struct):
    """One attempt to deliver a webhook's event or a channel's reply: when, how long it took,
    the receiver's HTTP status (null: no answer) and what went wrong (null: delivered)."""

    at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None


class DeliveryOut(msgspec.Struct):
    """One delivery — a webhook's event to one subscription, or a channel's reply — and every
    attempt made so far."""

    id: int
    #: The ``webhook-id`` header: the same on every retry (a channel's reply:
    #: ``<conversation id>-<seq>``).
    message_id: str
    type: str
    conversation_id: str | None
    status: str  # pending | delivered | parked
    #: Failed attempts since it was queued (or last re-delivered).
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    parked_at: datetime | None
    last_error: str | None
    history: list[AttemptOut]


class DeliveryPage(msgspec.Struct):
    items: list[DeliveryOut]
    #: ``before`` for the next (older) page; null on the last one.
    next_before: int | None


class Redelivered(msgspec.Struct):
    """The parked deliveries put back, due at once (in order behind nothing)."""

    redelivered: list[int]


class ConversationDetail(msgspec.Struct):
    conversation: ConversationSummary
    survey: dict[str, Any] | None
    emails: list[EmailOut] = []
    #: Where the survey stands: ``pending`` (it waits for an answer: in the WebChat while the
    #: conversation is ``ended``, then by link until its deadline), ``answered``, ``skipped``
    #: (declined by the visitor), ``expired`` (pending past its deadline); null: none offered.
    survey_status: Literal["pending", "answered", "skipped", "expired"] | None = None
    #: While the survey is pending: the link to its page, to send the visitor by hand.
    survey_link: SurveyLinkOut | None = None


class Transcript(msgspec.Struct):
    conversation: ConversationSummary
    #: One page of the stored events, in seq order, exactly as the participants received them
    #: (docs/protocol.md §2.2).
    events: list[msgspec.Raw]
    #: Pass as ``after`` to get the next page; null on the last page.
    next_after: int | None


class ResumeRequest(msgspec.Struct, forbid_unknown_fields=True):
    operator_id: int


class OperatorCounts(msgspec.Struct):
    available: int
    busy: int
    paused: int


class QueueOut(msgspec.Struct):
    group_id: int
    name: str
    waiting: int
    longest_wait_seconds: float
    operators: OperatorCounts


class Figures(msgspec.Struct):
    offered: int
    answered: int
    abandoned: int
    out_of_hours: int
    service_level: float | None
    asa_seconds: float | None
    aht_seconds: float | None


class BotFigures(msgspec.Struct):
    """The conversations that met a chatbot (F15)."""

    conversations: int = 0
    #: Finished by the bot without a person, and their share of ``conversations``.
    contained: int = 0
    containment: float | None = None
    #: Hand-offs by group id (a script's hand-off, or "talk to a person").
    handoffs: dict[str, int] = {}
    #: Visitors who left (ended, went away, fell silent) at each question, by node id.
    dropoffs: dict[str, int] = {}


class TotalFigures(Figures):
    #: Files sent (attachments a message carried) in the period's conversations; their bytes.
    files_sent: int = 0
    file_bytes: int = 0
    bot: BotFigures = msgspec.field(default_factory=BotFigures)


class ServiceFigures(Figures):
    service_id: int = 0
    files_sent: int = 0
    file_bytes: int = 0
    bot: BotFigures = msgspec.field(default_factory=BotFigures)


class GroupFigures(Figures):
    group_id: int = 0


class PausedFor(msgspec.Struct):
    #: A pause reason's id; null: the operator gave none.
    reason: str | None
    seconds: float


class OperatorFigures(msgspec.Struct):
    operator_id: int
    #: Seconds paused within the period, in all, and by pause reason.
    paused_seconds: float
    paused: list[PausedFor]


class ReportOut(msgspec.Struct):
    start: datetime
    end: datetime
    threshold_seconds: int
    total: TotalFigures
    services: list[ServiceFigures]
    groups: list[GroupFigures]
    #: Operators paused within the period (the stored pauses).
    operators: list[OperatorFigures] = []


class AuditOut(msgspec.Struct):
    id: int
    at: datetime
    actor: str
    action: str
    kind: str
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class AuditPage(msgspec.Struct):
    items: list[AuditOut]
    #: Pass as ``before`` to get older entries; null on the last page.
    next_before: int | None


class SignInRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=PASSWORD_MAX)]


class SessionOut(msgspec.Struct):
    """A new session: its token (shown this once), when it expires, whom it acts for."""

    token: str
    expires_at: datetime
    user: UserProfile


class SessionInfo(msgspec.Struct):
    """The session of the request: when it expires, whom it acts for."""

    expires_at: datetime
    user: UserProfile


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    old_password: Annotated[str, msgspec.Meta(min_length=1, max_length=PASSWORD_MAX)]
    new_password: Annotated[str, msgspec.Meta(min_length=1, max_length=PASSWORD_MAX)]


class PasswordSet(msgspec.Struct, forbid_unknown_fields=True):
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=PASSWORD_MAX)]
