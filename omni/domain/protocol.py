"""The websocket protocol (docs/protocol.md), both directions, as typed msgspec structs.

Rules of this module:

* Every frame a client may send and every frame the server sends is a struct here; the server
  builds no frame as a dict. Inbound frames are decoded once, straight into their struct;
  outbound frames are encoded once (:func:`encode`) and the same text goes to every recipient
  and, for history, into the store.
* A conversation is described on the wire in one shape, :class:`ConversationSummary`: in
  ``welcome``, ``offer``, ``assigned``, ``folder``, ``folder_changed`` and the admin API alike.
* Times are ``datetime`` objects (UTC) until msgspec encodes them as ISO 8601 with ``Z``: the one
  formatter of the protocol.
* Anything that does not fit becomes a :class:`Rejected` with one of the stable codes of
  :data:`ERROR_CODES` and the reason msgspec gives (which names the offending field, e.g.
  ``Expected `int`, got `str` - at `$.service_id```). Unknown extra fields of inbound frames
  are ignored, so newer clients keep working with this server.
* :func:`json_schema` publishes all of it as JSON Schema (``/protocol.schema.json``); the
  pages are written against that document.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec

from omni.domain.model import Avatar, PauseReason, QuestionKind, SurveyQuestion

#: The protocol's version; docs/protocol.md describes it.
VERSION = 1

ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ConversationId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
Text = Annotated[str, msgspec.Meta(max_length=100_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=500)]
UploadId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

#: Every error code the server sends, with when. docs/protocol.md lists the same table.
ERROR_CODES: dict[str, str] = {
    "bad_json": "the frame is not valid JSON",
    "unknown_type": "the frame's `type` is missing or not one this endpoint knows",
    "invalid_frame": "a field is missing, of the wrong type or out of range",
    "frame_too_large": "the frame is larger than the server's limit",
    "binary_not_supported": "the frame is binary; the protocol uses text frames",
    "not_started": "the visitor sent a conversation frame before `start` or `resume`",
    "already_started": "`start` or `resume` on a connection that already has a conversation",
    "unknown_service": "no chat service has this id",
    "invalid_identity": "the signed `identity` is not valid, has expired, or is not accepted here",
    "captcha_required": "`start` without `captcha` on a service that asks for one",
    "captcha_failed": "the CAPTCHA provider says the challenge was not passed",
    "captcha_unavailable": "the CAPTCHA could not be checked now (or is not set up); retry",
    "origin_not_allowed": "the page's origin is not among the service's allowed embedding origins",
    "invalid_token": "the resume token matches no conversation",
    "invalid_seq": "`last_seq` is negative or beyond the conversation's last event",
    "invalid_state": "the action is not allowed in the conversation's current status",
    "message_too_long": "the message text is longer than the server accepts",
    "unknown_attachment": "this conversation has no such upload",
    "not_your_attachment": "the upload was not uploaded by the sender",
    "attachment_claimed": "the upload is in a message already",
    "invalid_survey": "a survey answer is unknown, missing or out of range",
    "invalid_reply": "`bot_reply` with neither option nor text, or an option the bot did not "
    "offer at its question",
    "conversation_closed": "the conversation has ended; nothing more is accepted",
    "invalid_email": "the `transcript` address is not a single e-mail address",
    "transcript_unavailable": "this server sends no e-mail (no `[server.smtp]`)",
    "transcript_disabled": "the conversation's service does not send transcripts",
    "too_many_transcripts": "the transcript already went to the most addresses allowed (3)",
    "not_logged_in": "an operator frame before a successful `login`",
    "already_logged_in": "`login` on a connection that is already signed in",
    "invalid_login": "the token or session is unknown or ended, the operator inactive, or "
    "(supervisor) not a supervisor's or an administrator's",
    "unknown_conversation": "no open conversation has this id",
    "not_your_conversation": "the conversation is held by another operator",
    "unknown_pause_reason": "`status paused` with a `reason` that is not a configured one",
    "unknown_folder": "`folder` with a name the console does not have (out_of_hours)",
    "invalid_cursor": "`folder` with a cursor the server did not give",
    "not_offered": "`accept` for a conversation not offered to this operator (or no longer)",
    "unknown_group": "no group has this id",
    "unknown_operator": "no active operator has this id",
    "operator_unavailable": "the transfer's target operator is offline or at capacity",
    "invalid_transfer": "a transfer to the operator who holds the conversation",
    "superseded": "the conversation was resumed on another connection; this one closes",
    "session_replaced": "the operator signed in on another connection; this one closes",
    "slow_consumer": "the client did not read its frames fast enough; it should resume",
    "overloaded": "the server could not take the frame in time; retry it",
    "operator_deactivated": "an administrator deactivated or removed this operator; it closes",
    "server_shutdown": "the server is stopping; the client resumes against the next one",
    "moved": "this node no longer owns the conversation (cluster mode); the client resumes",
    "internal_error": "a fault in the server; the connection closes and the client resumes",
    "rate_limited": "too many frames or new conversations too fast; retry after `retry_after` s",
    "too_many_attempts": "too many failed sign-ins from this address; retry after `retry_after` s",
    "message_limit": "the out-of-hours conversation already holds the most visitor messages",
    "idle_timeout": "the connection sent no `start`, `resume` or `login` in time; it closes",
    "ping_timeout": "the client did not answer the server's ping in time; it closes",
    "credentials_changed": "the token this session signed in with was changed; it closes",
    "session_ended": "the sign-in session this connection logged in with ended; it closes",
}


class Rejected(Exception):
    """A frame or an action refused; ``code`` is the stable protocol error code."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        #: Seconds after which the same frame would be accepted (rate limits).
        self.retry_after = retry_after


# -- what frames are made of ---------------------------------------------------------------------


class Status(StrEnum):
    """A conversation's status (protocol §3)."""

    QUEUED = "queued"
    OFFERED = "offered"
    ACTIVE = "active"
    OUT_OF_HOURS = "out_of_hours"
    ENDED = "ended"  # waiting for the survey
    BOT = "bot"  # talking with the service's chatbot, before any queue (F15)
    CLOSED = "closed"
    ABANDONED = "abandoned"


Party = Literal["visitor", "operator"]
#: Who ended a conversation: a participant, or a deadline of the service (F16).
EndedBy = Literal[
    "visitor", "operator", "queue_timeout", "visitor_idle", "visitor_gone", "bot", "bot_timeout"
]
#: Why a conversation left its operator for a queue (or for another operator).
TransferReason = Literal["transfer", "operator_disconnected", "operator_reply_timeout"]


class VisitorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the visitor says they are, as the ``start`` frame carries it (F7)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    fields: dict[ShortText, ShortText] = {}


class Visitor(VisitorInfo, frozen=True, omit_defaults=True):
    """The visitor as the conversation keeps and shows them: ``verified`` when the embedding
    site signed who they are (F8) — never taken from what a client typed."""

    verified: bool = False


class Author(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    kind: Party
    #: Left out where only the kind matters (the visitor's typing indicator).
    name: str | None = None
    #: An operator's id.
    id: int | None = None


class OperatorRef(msgspec.Struct, frozen=True):
    id: int
    name: str


class GroupRef(msgspec.Struct, frozen=True):
    id: int
    name: str


class TransferTarget(msgspec.Struct, frozen=True):
    kind: Literal["group", "operator"]
    id: int
    name: str


class ServiceRef(msgspec.Struct, frozen=True, omit_defaults=True):
    id: int
    name: str
    avatar: Avatar
    #: In ``started``: the service's chatbot answers first (its ``bot`` frames follow), so the
    #: page shows the conversation with the bot rather than a queue.
    bot: bool = False


class Question(msgspec.Struct, frozen=True, omit_defaults=True):
    """A survey question as the visitor's page gets it: only the fields its kind uses."""

    id: str
    kind: QuestionKind
    label: str
    required: bool
    min: int | None = None
    max: int | None = None
    options: tuple[str, ...] | None = None
    max_length: int | None = None

    @classmethod
    def of(cls, q: SurveyQuestion) -> Question:
        if q.kind in (QuestionKind.RATING, QuestionKind.SCALE):
            return cls(q.id, q.kind, q.label, q.required, min=q.min, max=q.max)
        if q.kind is QuestionKind.CHOICE:
            return cls(q.id, q.kind, q.label, q.required, options=q.options)
        return cls(q.id, q.kind, q.label, q.required, max_length=q.max_length)


class ChannelRef(msgspec.Struct, frozen=True, gc=False):
    """The messaging channel a conversation came through (issue 17): its ``kind``
    (``whatsapp``, ``telegram``, ``generic``) and the channel's ``id`` in the configuration."""

    kind: str
    id: str


class ConversationSummary(msgspec.Struct, frozen=True):
    """A conversation in one shape, wherever it is listed or offered."""

    id: str
    ticket: str
    service_id: int
    #: The group it is queued in or was last answered in; None out of hours.
    group_id: int | None
    status: Status
    visitor: Visitor
    created_at: datetime
    #: The highest ``seq`` of its history.
    last_seq: int
    operator_id: int | None = None
    operator_name: str | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: EndedBy | None = None
    #: Seconds the visitor waited for an operator: in an offer, so far; once an operator took
    #: it, from arrival to that first answer; null while not answered (outside offers).
    waited: float | None = None
    #: The messaging channel it came through; null: the WebChat.
    channel: ChannelRef | None = None


# -- visitor → server ----------------------------------------------------------------------------


# Frames take part in no reference cycle: the collector need not track them (gc=False).


class _Inbound(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    pass


class Start(_Inbound, frozen=True, tag="start"):
    service_id: int
    #: Required unless ``identity`` is given (then only its ``fields`` are used).
    visitor: VisitorInfo | None = None
    #: A JWT (HS256) signed by the embedding site with the service's identity secret (F8).
    identity: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    #: The token the CAPTCHA widget gave the page (F19), for services that ask for one.
    captcha: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class Resume(_Inbound, frozen=True, tag="resume"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    last_seq: Seq = 0


class VisitorMessage(_Inbound, frozen=True, tag="message"):
    client_id: ClientId
    text: Text


class VisitorAttachment(_Inbound, frozen=True, tag="attachment"):
    """A message that carries a file uploaded over HTTP (``upload_id``: the upload's id)."""

    client_id: ClientId
    upload_id: UploadId


class VisitorTyping(_Inbound, frozen=True, tag="typing"):
    pass


class VisitorEnd(_Inbound, frozen=True, tag="end"):
    pass


class SurveyAnswers(_Inbound, frozen=True, tag="survey"):
    answers: dict[ShortText, int | str | None]


class SurveySkip(_Inbound, frozen=True, tag="survey_skip"):
    pass


class TranscriptRequest(_Inbound, frozen=True, tag="transcript"):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]


class Ping(_Inbound, frozen=True, tag="ping"):
    pass


class BotReply(_Inbound, frozen=True, tag="bot_reply"):
    """The visitor's answer to the bot (F15): an option's ``id`` (a button), or ``text``."""

    client_id: ClientId
    option: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    text: Annotated[str, msgspec.Meta(max_length=500)] | None = None


VisitorFrame = (
    Start
    | Resume
    | VisitorMessage
    | VisitorAttachment
    | VisitorTyping
    | VisitorEnd
    | SurveyAnswers
    | SurveySkip
    | TranscriptRequest
    | Ping
    | BotReply
)

# -- operator → server ---------------------------------------------------------------------------


class Login(_Inbound, frozen=True, tag="login"):
    #: An operator's console token, or a sign-in session's token (``omni_session_…``) of a
    #: user with the operator role.
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class SetStatus(_Inbound, frozen=True, tag="status"):
    status: Literal["available", "paused"]
    #: With ``paused``: the id of one of the configured pause reasons (``welcome``'s
    #: ``pause_reasons``); null: unspecified. Not allowed with ``available``.
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None


class Accept(_Inbound, frozen=True, tag="accept"):
    conversation_id: ConversationId


class Sync(_Inbound, frozen=True, tag="sync"):
    conversation_id: ConversationId
    last_seq: Seq = 0


class OperatorMessage(_Inbound, frozen=True, tag="message"):
    conversation_id: ConversationId
    client_id: ClientId
    text: Text


class OperatorAttachment(_Inbound, frozen=True, tag="attachment"):
    conversation_id: ConversationId
    client_id: ClientId
    upload_id: UploadId


class OperatorTyping(_Inbound, frozen=True, tag="typing"):
    conversation_id: ConversationId


class Transfer(_Inbound, frozen=True, tag="transfer"):
    conversation_id: ConversationId
    group_id: int | None = None
    operator_id: int | None = None


class OperatorEnd(_Inbound, frozen=True, tag="end"):
    conversation_id: ConversationId


class OperatorResume(_Inbound, frozen=True, tag="resume"):
    conversation_id: ConversationId


class AskTargets(_Inbound, frozen=True, tag="targets"):
    """Where the held conversation could be transferred to right now."""

    conversation_id: ConversationId


class OpenFolder(_Inbound, frozen=True, tag="folder"):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


OperatorFrame = (
    Login
    | SetStatus
    | Accept
    | Sync
    | OperatorMessage
    | OperatorAttachment
    | OperatorTyping
    | Transfer
    | OperatorEnd
    | OperatorResume
    | OpenFolder
    | AskTargets
    | Ping
)

# -- supervisor → server -------------------------------------------------------------------------


class Assign(_Inbound, frozen=True, tag="assign"):
    """A supervisor takes a waiting conversation out of its queue straight to an operator."""

    conversation_id: ConversationId
    operator_id: int


#: ``login`` and ``transfer`` are the operator's frames, ``ping`` the visitor's.
SupervisorFrame = Login | Transfer | Assign | Ping

# -- server → client: history (stored, with seq) -------------------------------------------------


class _Outbound(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    pass


class _Event(_Outbound, frozen=True):
    """A stored event of a conversation: it carries its ``seq`` and is replayed on resume."""

    conversation_id: str
    seq: int


class AttachmentRef(msgspec.Struct, frozen=True, gc=False):
    """The file a message carries: download it at ``/api/v1/attachments/{id}`` (a page mints a
    short-lived link with ``POST /api/v1/attachments/{id}/link``)."""

    id: str
    name: str
    size: int
    type: str


class Message(_Event, frozen=True, tag="message", omit_defaults=True):
    #: ``<conversation_id>-<seq>``.
    id: str
    author: Author
    #: A file's message has its file's name as its text, or its caption (a channel's).
    text: str
    at: datetime
    attachment: AttachmentRef | None = None


class Assigned(_Event, frozen=True, tag="assigned"):
    operator: OperatorRef
    avatar: Avatar
    conversation: ConversationSummary


class Transferred(_Event, frozen=True, tag="transferred"):
    to: TransferTarget
    reason: TransferReason


class IdleWarning(_Event, frozen=True, tag="idle_warning"):
    #: Seconds until the conversation ends if the visitor stays silent; null: it will not.
    closes_in: float | None


class Ended(_Event, frozen=True, tag="ended"):
    by: EndedBy


class Survey(_Event, frozen=True, tag="survey"):
    questions: tuple[Question, ...]


class Closed(_Event, frozen=True, tag="closed"):
    message: str


class OutOfHours(_Event, frozen=True, tag="out_of_hours"):
    message: str
    #: The next instant the service takes conversations again (a new one would be queued);
    #: null if it does not open within the schedules' look-ahead (400 days). Events stored
    #: before this field existed lack it: unknown.
    opens_at: datetime | None = None


class BotOption(msgspec.Struct, frozen=True, gc=False):
    id: str
    label: str


class BotSays(_Event, frozen=True, tag="bot", omit_defaults=True):
    """The chatbot speaks (F15): ``options`` to pick from (buttons; the last may be
    ``@person``, "talk to a person"), ``input`` the kind of free answer it expects (``text``,
    ``email``, ``phone``, ``number``, ``choice``; absent: none, or pick an option), ``node``
    the script's node, ``opens_at`` when a closed group opens (after a hand-off to it)."""

    text: str
    node: str
    at: datetime
    options: tuple[BotOption, ...] = ()
    input: str | None = None
    opens_at: datetime | None = None


class BotAnswered(_Event, frozen=True, tag="bot_reply", omit_defaults=True):
    """The visitor's answer to the bot, as the conversation keeps it: ``text`` (the option's
    label, or what they typed) and the ``option`` id when they picked one."""

    id: str
    author: Author
    text: str
    at: datetime
    option: str | None = None


Event = (
    Message
    | Assigned
    | Transferred
    | IdleWarning
    | Ended
    | Survey
    | Closed
    | OutOfHours
    | BotSays
    | BotAnswered
)

# -- server → client: ephemeral (no seq, never stored) -------------------------------------------


class Ack(_Outbound, frozen=True, tag="ack"):
    conversation_id: str
    client_id: str
    #: The acknowledged message's seq.
    seq: int


class Typing(_Outbound, frozen=True, tag="typing"):
    conversation_id: str
    author: Author


class Error(_Outbound, frozen=True, tag="error", omit_defaults=True):
    code: str
    message: str
    conversation_id: str | None = None
    client_id: str | None = None
    #: Seconds to wait before sending the refused frame again (``rate_limited``,
    #: ``too_many_attempts``).
    retry_after: float | None = None


class Pong(_Outbound, frozen=True, tag="pong"):
    pass


class Started(_Outbound, frozen=True, tag="started"):
    conversation_id: str
    ticket: str
    #: The secret that resumes the conversation; keep it.
    token: str
    service: ServiceRef


class Resumed(_Outbound, frozen=True, tag="resumed"):
    conversation_id: str
    ticket: str
    status: Status
    #: The conversation's latest seq.
    last_seq: int


class Queued(_Outbound, frozen=True, tag="queued"):
    conversation_id: str
    #: 1 = next.
    position: int
    #: Seconds the visitor can expect to wait from now, learnt from the group's recent answers
    #: (:mod:`omni.domain.estimate`); null when too few recent answers to tell.
    estimated_wait: int | None


class TranscriptQueued(_Outbound, frozen=True, tag="transcript_queued"):
    conversation_id: str
    email: str


class OperatorInfo(msgspec.Struct, frozen=True):
    id: int
    name: str
    capacity: int
    status: Literal["available", "paused", "offline"]
    #: The pause reason's id while ``paused`` with one; null otherwise.
    reason: str | None = None


class Welcome(_Outbound, frozen=True, tag="welcome"):
    operator: OperatorInfo
    groups: tuple[GroupRef, ...]
    #: The active conversations this operator holds, by id.
    conversations: tuple[ConversationSummary, ...]
    #: The reasons a pause may give (``status {status: "paused", reason}``), in display order.
    pause_reasons: tuple[PauseReason, ...] = ()


class StatusSet(_Outbound, frozen=True, tag="status"):
    status: Literal["available", "paused"]
    #: The pause reason's id; null when available or paused without one.
    reason: str | None = None


class TargetOperator(msgspec.Struct, frozen=True):
    id: int
    name: str
    #: Conversations they could take now (capacity less what they hold or are offered).
    free: int


class Targets(_Outbound, frozen=True, tag="targets"):
    """Answer to ``targets``: what a ``transfer`` of the conversation would accept now."""

    conversation_id: str
    #: The groups linked to the conversation's service, in the service's order.
    groups: tuple[GroupRef, ...]
    #: Signed-in operators other than the asker with free capacity, by id.
    operators: tuple[TargetOperator, ...]


class FolderChanged(_Outbound, frozen=True, tag="folder_changed", omit_defaults=True):
    """A folder gained a conversation (``added``) or lost one (``removed``, its id)."""

    name: str
    added: ConversationSummary | None = None
    removed: str | None = None


class Offer(_Outbound, frozen=True, tag="offer"):
    conversation_id: str
    conversation: ConversationSummary
    #: Seconds to accept.
    timeout: float


class OfferWithdrawn(_Outbound, frozen=True, tag="offer_withdrawn"):
    conversation_id: str


class Folder(_Outbound, frozen=True, tag="folder"):
    name: str
    conversations: tuple[ConversationSummary, ...]
    #: Send it back as ``cursor`` for the next page; null on the last page.
    next_cursor: str | None


class SupervisorInfo(msgspec.Struct, frozen=True):
    """Who signed in to the live view: the API token's id and name, and its role."""

    id: str
    name: str
    role: Literal["admin", "supervisor"]


class SupervisorWelcome(_Outbound, frozen=True, tag="welcome"):
    supervisor: SupervisorInfo


class GroupBoard(msgspec.Struct, frozen=True):
    """One group on the board: its queue now, and today's figures so far."""

    id: int
    name: str
    #: Conversations waiting: queued, or offered and not yet accepted.
    waiting: int
    #: When the one waiting longest began waiting (the page ticks the wait from it); null
    #: when none waits.
    oldest_waiting_since: datetime | None
    #: Today's conversations last in this group (as the reports count them).
    offered: int
    answered: int
    abandoned: int
    #: Answered within ``threshold_seconds`` / (answered + abandoned); null: no outcome yet.
    service_level: float | None
    #: The service level of each 15-minute interval of the day, from ``day_start`` up to the
    #: current one; null where nothing counted.
    intervals: tuple[float | None, ...]


class OperatorBoard(msgspec.Struct, frozen=True):
    id: int
    name: str
    groups: tuple[int, ...]
    presence: Literal["available", "paused", "offline"]
    #: Why a paused operator paused; null when not paused or no reason was given.
    pause_reason: str | None
    #: Conversations offered to or held by the operator.
    held: int
    capacity: int
    #: Signed in and every slot taken (``held >= capacity``).
    busy: bool


class Board(_Outbound, frozen=True, tag="board"):
    """The supervisor's live view: sent after ``welcome`` and whenever what it shows changes
    (at most one a second)."""

    #: The server's time when the board was made.
    at: datetime
    #: The day today's figures cover, in ``timezone``.
    day: date
    timezone: str
    #: The day's first instant; interval ``i`` starts ``i * interval_minutes`` after it.
    day_start: datetime
    interval_minutes: int
    threshold_seconds: float
    groups: tuple[GroupBoard, ...]
    operators: tuple[OperatorBoard, ...]


class Done(_Outbound, frozen=True, tag="done"):
    """A supervisor's action was carried out."""

    action: Literal["transfer", "assign"]
    conversation_id: str


ToVisitor = Event | Ack | Typing | Error | Pong | Started | Resumed | Queued | TranscriptQueued
#: Operators never get visitor-only events (the survey, the out-of-hours notice).
ToOperator = (
    Message
    | BotSays
    | BotAnswered
    | Assigned
    | Transferred
    | IdleWarning
    | Ended
    | Closed
    | Ack
    | Typing
    | Error
    | Pong
    | Welcome
    | StatusSet
    | Offer
    | OfferWithdrawn
    | Folder
    | FolderChanged
    | Targets
)

ToSupervisor = SupervisorWelcome | Board | Done | Error | Pong

# -- codecs --------------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_visitor_decoder = msgspec.json.Decoder(VisitorFrame)
_operator_decoder = msgspec.json.Decoder(OperatorFrame)
_supervisor_decoder = msgspec.json.Decoder(SupervisorFrame)
_event_decoder = msgspec.json.Decoder(Event)


def encode(frame: msgspec.Struct) -> str:
    """The frame's JSON text: what is sent, and stored for history."""
    return _encoder.encode(frame).decode()


def isoformat(at: datetime) -> str:
    """An instant as the protocol writes it (ISO 8601, UTC with ``Z``): for the rare text that
    is not a frame field, such as a paging cursor. Give it UTC datetimes, as everything inside
    Omni is."""
    return _encoder.encode(at).decode()[1:-1]


def error_frame(code: str, message: str, **extra: Any) -> str:
    return encode(Error(code, message, **extra))


def decode_event(text: str | bytes) -> Event:
    """A stored event back as its struct (transcripts; never on the delivery path)."""
    event: Event = _event_decoder.decode(text)
    return event


def _decode(decoder: msgspec.json.Decoder[Any], data: str | bytes, limit: int) -> Any:
    if isinstance(data, bytes):
        raise Rejected("binary_not_supported", "send JSON as text frames")
    # The limit is in UTF-8 bytes; only a frame that could exceed it is encoded to count them.
    if len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit):
        raise Rejected("frame_too_large", f"frames are limited to {limit} bytes")
    if "\\u0000" in data or "\x00" in data:
        # Text is stored in PostgreSQL, which cannot hold NUL: refuse it with a reason.
        raise Rejected("invalid_frame", "text must not contain NUL characters (\\u0000)")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = str(exc)
        if reason.endswith("at `$.type`") or "required field `type`" in reason:
            raise Rejected("unknown_type", reason) from None
        raise Rejected("invalid_frame", reason) from None
    except msgspec.DecodeError as exc:
        raise Rejected("bad_json", str(exc)) from None
    except RecursionError:
        # msgspec decodes nested arrays and objects recursively: a 2 KB frame of a thousand
        # brackets exhausts the stack before the decoder can say anything about it.
        raise Rejected("bad_json", "the JSON is nested too deeply") from None


def decode_visitor(data: str | bytes, limit: int) -> VisitorFrame:
    frame: VisitorFrame = _decode(_visitor_decoder, data, limit)
    return frame


def decode_operator(data: str | bytes, limit: int) -> OperatorFrame:
    frame: OperatorFrame = _decode(_operator_decoder, data, limit)
    return frame


def decode_supervisor(data: str | bytes, limit: int) -> SupervisorFrame:
    frame: SupervisorFrame = _decode(_supervisor_decoder, data, limit)
    return frame


#: The six directions of the protocol, as published in the JSON Schema.
DIRECTIONS: dict[str, Any] = {
    "visitor_to_server": VisitorFrame,
    "server_to_visitor": ToVisitor,
    "operator_to_server": OperatorFrame,
    "server_to_operator": ToOperator,
    "supervisor_to_server": SupervisorFrame,
    "server_to_supervisor": ToSupervisor,
}


def json_schema() -> dict[str, Any]:
    """The protocol as one JSON Schema (2020-12): ``$defs`` holds every frame and value type,
    and one entry per direction (``visitor_to_server``, ...) that admits exactly that
    direction's frames, told apart by ``type``. The document as a whole admits a frame of any
    direction."""
    refs, defs = msgspec.json.schema_components(
        list(DIRECTIONS.values()), ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "/protocol.schema.json",
        "title": f"Omni websocket protocol, version {VERSION}",
        "description": (
            "Frames are JSON text frames on /ws/visitor, /ws/operator and /ws/supervisor; "
            "`type` names the "
            "frame. Clients must ignore fields they do not know. See docs/protocol.md."
        ),
        "anyOf": [{"$ref": f"#/$defs/{direction}"} for direction in DIRECTIONS],
        "$defs": {**dict(zip(DIRECTIONS, refs, strict=True)), **defs},
    }
