"""The conversation state machine (DESIGN §3), sans-IO.

Rules of this module — everything that affects a conversation's lifecycle lives here:

* :data:`TRANSITIONS` is the whole lifecycle as data: for each event type, the statuses in which
  it is allowed and the status it leads to. :func:`handle` consults it first; an event from a
  visitor or operator in any other status is :class:`Rejected` with code ``invalid_state``.
  Internal events (offers, timers, presence changes) that arrive late — after the status they
  were meant for has passed — are ignored instead, because such races are normal.
* :func:`handle` checks everything before it changes anything: a rejected event leaves the
  conversation exactly as it was. It then mutates the conversation in place (a conversation is
  owned by one actor; copying it on every message would be waste) and returns the effects the
  caller must carry out, in order.
* Every event a participant sees as history is an :class:`Emit` with the next ``seq``; ``seq``
  is strictly increasing per conversation. Ephemeral signals (typing, offers, acks) carry none.
* A ``client_id`` already seen from the same author produces the same :class:`Ack` again and
  nothing else: sends are idempotent.
* Nothing is accepted after ``closed`` or ``abandoned`` — with one exception, outside the
  table: the survey of a closed conversation may still be answered by link, once, until its
  deadline (:func:`answer_closed_survey`; the survey page, docs/pages.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import msgspec

from omni.domain import bot as bots
from omni.domain import protocol as p
from omni.domain.attachments import Attachment
from omni.domain.bot import Bot, BotState
from omni.domain.model import Directory, Service, SurveyQuestion, Timers
from omni.domain.protocol import ChannelRef, EndedBy, Party, Rejected, Status, Visitor

__all__ = ["EndedBy", "Party", "Rejected", "Status", "Visitor"]

#: Longest message text accepted, in characters.
MAX_TEXT = 8000

OPEN_STATUSES = frozenset({Status.BOT, Status.QUEUED, Status.OFFERED, Status.ACTIVE, Status.ENDED})
TERMINAL_STATUSES = frozenset({Status.CLOSED, Status.ABANDONED})

Audience = Literal["both", "visitor", "operator"]

#: Where a conversation's survey stands: offered and waiting for an answer (in the page while
#: ``ended``, then by link until its deadline), answered, or declined by the visitor. None: no
#: survey was offered (the service has none, or no operator answered the conversation).
SurveyState = Literal["pending", "answered", "skipped"]


# --- the conversation -------------------------------------------------------------------------


@dataclass(slots=True)
class Conversation:
    id: str
    ticket: str
    service_id: int
    token_hash: str
    visitor: Visitor
    status: Status
    group_id: int | None
    created_at: datetime
    #: When the visitor began waiting: their place in any queue (a transfer keeps it).
    waiting_since: datetime
    operator_id: int | None = None
    operator_name: str | None = None
    offered_to: int | None = None
    last_seq: int = 0
    #: (author key, client_id) -> seq of the stored message; makes sends idempotent.
    client_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    ended_by: EndedBy | None = None
    #: True while the operator is disconnected and the grace timer runs.
    grace_pending: bool = False
    #: First time an operator took it, and when it ended or was abandoned: reports.
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    #: It arrived while the service was closed (even if an operator took it later, F4).
    arrived_out_of_hours: bool = False
    #: While active, whose reply the conversation waits for: the visitor's after the operator
    #: wrote (the idle timers run), the operator's after the visitor wrote (the reply deadline
    #: runs). Not stored: after a restart the timers start again with the next message.
    turn: Party | None = None
    #: Its time with the service's chatbot (F15), if it met one: the script it runs while in
    #: ``bot``, and afterwards how it came out (reports).
    bot: BotState | None = None
    #: Its survey (F13): see :data:`SurveyState`.
    survey: SurveyState | None = None
    #: The messaging channel it came through (issue 17), and who writes on it there (the
    #: platform's user or chat id, where replies go); None: the WebChat.
    channel: ChannelRef | None = None
    channel_user: str | None = None

    def summary(self, *, waited: float | None = None) -> p.ConversationSummary:
        """The conversation as the protocol and the API show it. ``waited``: in an offer, the
        wait so far; otherwise, once answered, the wait from arrival to the first answer."""
        if waited is None and self.answered_at is not None:
            waited = round(max((self.answered_at - self.waiting_since).total_seconds(), 0.0), 3)
        return p.ConversationSummary(
            id=self.id,
            ticket=self.ticket,
            service_id=self.service_id,
            group_id=self.group_id,
            status=self.status,
            visitor=self.visitor,
            created_at=self.created_at,
            last_seq=self.last_seq,
            operator_id=self.operator_id,
            operator_name=self.operator_name,
            answered_at=self.answered_at,
            ended_at=self.ended_at,
            ended_by=self.ended_by,
            waited=waited,
            channel=self.channel,
        )


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitorMessage:
    client_id: str
    text: str
    #: An ``attachment`` frame: the upload it names, and what the store knows of it (None:
    #: nothing). The caller looks it up; the rules decide whether the message may claim it.
    upload_id: str | None = None
    upload: Attachment | None = None


@dataclass(frozen=True, slots=True)
class OperatorMessage:
    operator_id: int
    client_id: str
    text: str
    upload_id: str | None = None
    upload: Attachment | None = None


@dataclass(frozen=True, slots=True)
class BotAnswer:
    """The visitor answers the chatbot: an option's id, or text (a ``message`` sent while the
    bot talks is one too)."""

    client_id: str
    option: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class BotTimeout:
    """The visitor stayed silent at the bot's question for the script's ``inactivity``."""


@dataclass(frozen=True, slots=True)
class VisitorTyping:
    pass


@dataclass(frozen=True, slots=True)
class OperatorTyping:
    operator_id: int


@dataclass(frozen=True, slots=True)
class Offer:
    operator_id: int


@dataclass(frozen=True, slots=True)
class OfferExpired:
    operator_id: int


@dataclass(frozen=True, slots=True)
class Accept:
    operator_id: int
    operator_name: str


@dataclass(frozen=True, slots=True)
class TransferToGroup:
    operator_id: int
    group_id: int
    group_name: str


@dataclass(frozen=True, slots=True)
class TransferToOperator:
    """The target's capacity is reserved by the caller before this event is handled."""

    operator_id: int
    target_id: int
    target_name: str


@dataclass(frozen=True, slots=True)
class OperatorLeft:
    operator_id: int


@dataclass(frozen=True, slots=True)
class OperatorReturned:
    operator_id: int


@dataclass(frozen=True, slots=True)
class GraceExpired:
    operator_id: int


@dataclass(frozen=True, slots=True)
class VisitorEnd:
    pass


@dataclass(frozen=True, slots=True)
class OperatorEnd:
    operator_id: int


@dataclass(frozen=True, slots=True)
class SurveyAnswered:
    answers: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SurveySkipped:
    pass


@dataclass(frozen=True, slots=True)
class QueueTimeout:
    """The service's queue timeout ran out while the visitor was still waiting (F16)."""


@dataclass(frozen=True, slots=True)
class SurveyExpired:
    pass


@dataclass(frozen=True, slots=True)
class VisitorDetached:
    """The visitor's connection is gone (closed, dropped, or never there after a restart)."""


@dataclass(frozen=True, slots=True)
class VisitorAttached:
    """The visitor is connected again (resumed)."""


@dataclass(frozen=True, slots=True)
class VisitorGone:
    """The visitor stayed away from a waiting conversation for ``absent_visitor_timeout``."""


@dataclass(frozen=True, slots=True)
class VisitorIdleWarning:
    """The visitor has not answered the operator for the service's ``visitor_idle_warning``."""


@dataclass(frozen=True, slots=True)
class VisitorIdleClose:
    """The visitor has not answered the operator for the service's ``visitor_idle_close``."""


@dataclass(frozen=True, slots=True)
class OperatorReplyTimeout:
    """The operator left the visitor's message unanswered for the service's
    ``operator_reply``."""

    operator_id: int


@dataclass(frozen=True, slots=True)
class ResumeByOperator:
    """An operator's active contact on an out-of-hours conversation (F4); capacity reserved by
    the caller."""

    operator_id: int
    operator_name: str
    #: The group that takes the conversation if it must be requeued later (the operator's own
    #: group among the service's links, chosen by the caller).
    group_id: int


@dataclass(frozen=True, slots=True)
class SupervisorTransferToGroup:
    """A supervisor moves the conversation to a group's queue (keeping its place by when the
    visitor began waiting): a waiting one out of its queue or its pending offer, an active one
    away from its operator — "stuck" ones too, whose operator is gone or silent."""

    group_id: int
    group_name: str


@dataclass(frozen=True, slots=True)
class SupervisorAssign:
    """A supervisor gives the conversation to an operator (capacity reserved by the caller):
    a waiting one straight out of its queue or its pending offer, as an accepted offer would
    (``assign``, the supervisor's take-over); ``transfer``: announced as a transfer
    (``transferred`` first), and then an active one may also be taken from its operator."""

    operator_id: int
    operator_name: str
    transfer: bool = False


Event = (
    VisitorMessage
    | BotAnswer
    | BotTimeout
    | OperatorMessage
    | VisitorTyping
    | OperatorTyping
    | Offer
    | OfferExpired
    | Accept
    | TransferToGroup
    | TransferToOperator
    | OperatorLeft
    | OperatorReturned
    | GraceExpired
    | VisitorEnd
    | OperatorEnd
    | SurveyAnswered
    | SurveySkipped
    | SurveyExpired
    | QueueTimeout
    | VisitorDetached
    | VisitorAttached
    | VisitorGone
    | ResumeByOperator
    | VisitorIdleWarning
    | VisitorIdleClose
    | OperatorReplyTimeout
    | SupervisorTransferToGroup
    | SupervisorAssign
)

# --- effects ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emit:
    """Store this event (its frame carries its ``seq``), then deliver it to ``audience``."""

    frame: p.Event
    audience: Audience
    #: The operator who receives it (the conversation's operator when it was emitted).
    operator_id: int | None = None
    #: For messages: (author key, client_id), kept so a restarted actor still knows the send.
    client_key: tuple[str, str] | None = None
    #: For messages: the party who sent it. It gets an :class:`Ack` live instead of an echo;
    #: a replay after a reconnect includes the message.
    sender: Party | None = None
    #: For a file's message: the attachment it claims, in the same write as the event.
    claims: str | None = None

    @property
    def seq(self) -> int:
        return self.frame.seq

    @property
    def kind(self) -> str:
        """The frame's ``type``."""
        return type(self.frame).__struct_config__.tag  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Ack:
    to: Party
    client_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class Signal:
    """An ephemeral frame (no seq, not stored) for one party; ``operator_id`` names which
    operator when ``to`` is the operator side and it is not the current one (offers)."""

    to: Party
    frame: p.Typing | p.Offer | p.OfferWithdrawn | p.Started
    operator_id: int | None = None


@dataclass(frozen=True, slots=True)
class EnterQueue:
    """Wait in the group's queue. Queues are ordered by when the visitor began waiting (then by
    ticket), so a conversation that comes back — offer unanswered, operator gone, transferred —
    goes ahead of everyone who arrived after it."""

    group_id: int


@dataclass(frozen=True, slots=True)
class LeaveQueue:
    group_id: int


@dataclass(frozen=True, slots=True)
class Answered:
    """An operator took the conversation from the group's queue (an accepted offer): the
    group's wait estimate learns from how long it waited (:mod:`omni.domain.estimate`).
    Transfers to an operator and resumes of out-of-hours conversations took nobody from a
    queue, and are not answers in this sense."""

    group_id: int


@dataclass(frozen=True, slots=True)
class Release:
    """Free the operator's slot held by this conversation; ``rank_last``: the operator let it
    down (a reply deadline missed) and goes behind the other idle operators for the next offer."""

    operator_id: int
    rank_last: bool = False


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class SaveSurvey:
    answers: dict[str, Any] | None  # None: skipped or timed out


@dataclass(frozen=True, slots=True)
class Persist:
    """The conversation record (status, group, operator) changed and must be stored."""


@dataclass(frozen=True, slots=True)
class ReplayHistory:
    """Send the newly assigned operator the history they have not seen (seq < ``before``)."""

    operator_id: int
    before: int


Effect = (
    Emit
    | Ack
    | Signal
    | EnterQueue
    | LeaveQueue
    | Answered
    | Release
    | StartTimer
    | CancelTimer
    | SaveSurvey
    | Persist
    | ReplayHistory
)

# --- the lifecycle as data ---------------------------------------------------------------------

B, Q, OF, A, OOH, E, C, AB = (
    Status.BOT,
    Status.QUEUED,
    Status.OFFERED,
    Status.ACTIVE,
    Status.OUT_OF_HOURS,
    Status.ENDED,
    Status.CLOSED,
    Status.ABANDONED,
)

#: event type -> {status in which it is allowed: status it leads to}. Events that end in
#: ``ended`` go on to ``closed`` at once when the service has no survey.
TRANSITIONS: dict[type, dict[Status, Status]] = {
    VisitorMessage: {Q: Q, OF: OF, A: A, OOH: OOH},
    BotAnswer: {B: B},
    BotTimeout: {B: AB},
    OperatorMessage: {A: A},
    VisitorTyping: {A: A},
    OperatorTyping: {A: A},
    Offer: {Q: OF},
    OfferExpired: {OF: Q},
    Accept: {OF: A},
    TransferToGroup: {A: Q},
    TransferToOperator: {A: A},
    OperatorLeft: {OF: Q, A: A},
    OperatorReturned: {A: A},
    GraceExpired: {A: Q},
    VisitorEnd: {B: AB, Q: AB, OF: AB, A: E},
    OperatorEnd: {A: E},
    SurveyAnswered: {E: C},
    SurveySkipped: {E: C},
    SurveyExpired: {E: C},
    ResumeByOperator: {OOH: A},
    QueueTimeout: {Q: AB, OF: AB},
    VisitorDetached: {B: B, Q: Q, OF: OF},
    VisitorAttached: {B: B, Q: Q, OF: OF, A: A, E: E, OOH: OOH},
    VisitorGone: {B: AB, Q: AB, OF: AB},
    VisitorIdleWarning: {A: A},
    VisitorIdleClose: {A: E},
    OperatorReplyTimeout: {A: Q},
    SupervisorTransferToGroup: {Q: Q, OF: Q, A: Q},
    SupervisorAssign: {Q: A, OF: A, A: A},
}

#: Events produced by the system itself (routing, timers, presence): late ones are dropped.
INTERNAL_EVENTS: frozenset[type] = frozenset(
    {
        Offer,
        OfferExpired,
        OperatorLeft,
        OperatorReturned,
        GraceExpired,
        SurveyExpired,
        QueueTimeout,
        BotTimeout,
        VisitorDetached,
        VisitorAttached,
        VisitorGone,
        VisitorIdleWarning,
        VisitorIdleClose,
        OperatorReplyTimeout,
    }
)


#: Events only the operator holding the conversation may send (checked before the status).
OWNER_EVENTS = (OperatorMessage, OperatorTyping, TransferToGroup, TransferToOperator, OperatorEnd)


@dataclass(frozen=True, slots=True)
class Context:
    """What the rules need from the configuration."""

    service: Service
    operator_grace: float
    group_names: Mapping[int, str] = field(default_factory=dict)
    #: A waiting conversation whose visitor is gone this long is abandoned (``visitor_gone``),
    #: whatever the service's ``queue_timeout``: nothing waits forever for nobody.
    absent_visitor_timeout: float = 300.0
    #: Visitor messages an out-of-hours conversation takes at most.
    out_of_hours_messages: int = 20
    #: The live configuration: where the chatbot asks which groups are open (F5).
    directory: Directory | None = None


@dataclass(frozen=True, slots=True)
class _World:
    """What the chatbot may ask (:class:`omni.domain.bot.World`), at one moment."""

    ctx: Context
    conv: Conversation
    now: datetime

    def _directory(self) -> Directory:
        assert self.ctx.directory is not None, "a bot conversation needs the directory"
        return self.ctx.directory

    def group_open(self, group_id: int) -> bool:
        return self._directory().group_open(self.ctx.service, group_id, self.now)

    def group_opens_at(self, group_id: int) -> datetime | None:
        return self._directory().group_opens_at(self.ctx.service, group_id, self.now)

    def anyone_open(self) -> bool:
        return self._directory().route(self.ctx.service, self.now) is not None

    def local_time(self, zone: str) -> time:
        return self.now.astimezone(ZoneInfo(zone)).time()

    def visitor_field(self, name: str) -> str | None:
        visitor = self.conv.visitor
        if name in ("email", "phone", "name"):
            value: str | None = getattr(visitor, name)
            return value
        return visitor.fields.get(name)

    @property
    def group_closed_message(self) -> str:
        return self.ctx.service.group_closed_message


def open_conversation(
    *,
    conversation_id: str,
    ticket: str,
    token_hash: str,
    service: Service,
    visitor: Visitor,
    group_id: int | None,
    now: datetime,
    opens_at: datetime | None = None,
    channel: ChannelRef | None = None,
    channel_user: str | None = None,
) -> tuple[Conversation, list[Effect]]:
    """A new conversation: queued in ``group_id``, or out of hours when it is None — then the
    visitor is told the service's message and ``opens_at``, when it next takes conversations
    (:meth:`~omni.domain.model.Directory.next_opening`; None: not within the look-ahead)."""
    conv = Conversation(
        id=conversation_id,
        ticket=ticket,
        service_id=service.id,
        token_hash=token_hash,
        visitor=visitor,
        status=Status.QUEUED if group_id is not None else Status.OUT_OF_HOURS,
        group_id=group_id,
        created_at=now,
        waiting_since=now,
        arrived_out_of_hours=group_id is None,
        channel=channel,
        channel_user=channel_user,
    )
    effects: list[Effect] = [Persist()]
    if group_id is None:
        effects.append(
            _emit(
                conv,
                "visitor",
                p.OutOfHours,
                message=service.out_of_hours_message,
                opens_at=opens_at,
            )
        )
    else:
        effects.append(EnterQueue(group_id))
        if service.timers.queue_timeout is not None:
            effects.append(StartTimer("queue", service.timers.queue_timeout))
    return conv, effects


def open_bot_conversation(
    *,
    conversation_id: str,
    ticket: str,
    token_hash: str,
    visitor: Visitor,
    bot: Bot,
    now: datetime,
    ctx: Context,
    channel: ChannelRef | None = None,
    channel_user: str | None = None,
) -> tuple[Conversation, list[Effect]]:
    """A new conversation that meets the service's chatbot first (F15): the bot speaks from its
    start until its first question — or hands off, finishes, or finds nothing open at once."""
    conv = Conversation(
        id=conversation_id,
        ticket=ticket,
        service_id=ctx.service.id,
        token_hash=token_hash,
        visitor=visitor,
        status=Status.BOT,
        group_id=None,
        created_at=now,
        waiting_since=now,
        bot=BotState(script=bot),
        channel=channel,
        channel_user=channel_user,
    )
    assert conv.bot is not None
    step = bots.begin(conv.bot, _World(ctx, conv, now), person=ctx.service.bot_person)
    return conv, [Persist(), *_bot_step(conv, step, now, ctx)]


def _bot_step(conv: Conversation, step: bots.Step, now: datetime, ctx: Context) -> list[Effect]:
    """Carry out a turn of the bot: what it says, then where the conversation goes."""
    state = conv.bot
    assert state is not None
    effects: list[Effect] = [_say(conv, say, now) for say in step.says]
    effects.append(Persist())
    if step.next == "wait":
        assert state.script is not None
        effects.append(StartTimer("bot", state.script.inactivity))
        return effects
    effects.append(CancelTimer("bot"))
    group_id = step.group
    if step.next == "person":
        assert ctx.directory is not None
        group_id = ctx.directory.route(ctx.service, now)
        state.group = group_id
    if step.next == "ended":
        conv.status, conv.ended_by, conv.ended_at = Status.CLOSED, "bot", now
        return [
            *effects,
            _emit(conv, "visitor", p.Ended, by="bot"),
            _emit(conv, "visitor", p.Closed, message=ctx.service.closing_message),
        ]
    if group_id is None:
        # Nothing open: the out-of-hours path (a message is left for an operator, F4).
        state.outcome = "out_of_hours"
        conv.status, conv.arrived_out_of_hours = Status.OUT_OF_HOURS, True
        assert ctx.directory is not None
        opens_at = ctx.directory.next_opening(ctx.service, now)
        return [
            *effects,
            _emit(
                conv,
                "visitor",
                p.OutOfHours,
                message=ctx.service.out_of_hours_message,
                opens_at=opens_at,
            ),
        ]
    conv.status, conv.group_id, conv.waiting_since = Status.QUEUED, group_id, now
    effects.append(EnterQueue(group_id))
    if ctx.service.timers.queue_timeout is not None:
        effects.append(StartTimer("queue", ctx.service.timers.queue_timeout))
    return effects


def _say(conv: Conversation, say: bots.Say, now: datetime) -> Emit:
    return _emit(
        conv,
        "both",
        p.BotSays,
        text=say.text,
        node=say.node,
        at=now,
        options=tuple(p.BotOption(i, label) for i, label in say.options),
        input=None if say.input is None else say.input.value,
        opens_at=say.opens_at,
    )


def _collect(conv: Conversation) -> None:
    """What the bot collected joins the visitor's fields (the offer, the visitor panel, the API
    and the transcript show them); an ``email`` or ``phone`` the visitor did not give becomes
    theirs (the transcript offer uses it) when it is one: a field of that name collected as
    free text may hold anything, and the visitor's own must still fit (the store loads it)."""
    state = conv.bot
    if state is None or not state.fields:
        return
    visitor = conv.visitor
    fields = {**visitor.fields, **state.fields}
    changes: dict[str, Any] = {"fields": fields}
    for name, fits in (("email", bots.is_email), ("phone", bots.is_phone)):
        value = state.fields.get(name)
        if getattr(visitor, name) is None and value is not None and fits(value):
            changes[name] = value
    conv.visitor = msgspec.structs.replace(visitor, **changes)


def restore(
    conv: Conversation, operator_connected: bool, ctx: Context, now: datetime | None = None
) -> list[Effect]:
    """Effects that put a conversation loaded from the store back into routing (after a restart,
    or when its actor had been given up): a pending offer is void, so an offered conversation
    goes back to its queue; a queue timeout keeps counting from when the visitor began waiting;
    an active one whose operator is away starts the grace period; a survey waits again for its
    full timeout; a visitor at the bot's question gets its full inactivity time again."""
    # A channel's visitor has no connection to lose: nothing waits for them to come back.
    absent: list[Effect] = (
        [] if conv.channel is not None else [StartTimer("absent", ctx.absent_visitor_timeout)]
    )
    if conv.status is Status.BOT:
        assert conv.bot is not None and conv.bot.script is not None
        return [StartTimer("bot", conv.bot.script.inactivity), *absent]
    if conv.status in (Status.OFFERED, Status.QUEUED):
        assert conv.group_id is not None
        effects: list[Effect] = []
        if conv.status is Status.OFFERED:
            effects.append(Persist())
            if conv.offered_to is not None:
                # The offer died with the actor that made it: the operator's slot is given
                # back and their console told (nothing to undo after a process restart).
                effects += [_withdraw(conv, conv.offered_to), Release(conv.offered_to)]
        conv.status, conv.offered_to = Status.QUEUED, None
        effects.append(EnterQueue(conv.group_id))
        timeout = ctx.service.timers.queue_timeout
        if timeout is not None and conv.answered_at is None:
            waited = (now - conv.waiting_since).total_seconds() if now is not None else 0.0
            effects.append(StartTimer("queue", max(timeout - waited, 0.0)))
        # No visitor is connected to a restored conversation until they resume.
        effects += absent
        return effects
    if conv.status is Status.ACTIVE and not operator_connected:
        conv.grace_pending = True
        return [Persist(), StartTimer("grace", ctx.operator_grace)]
    if conv.status is Status.ACTIVE and conv.grace_pending:
        # The operator came back while no actor held the conversation.
        conv.grace_pending = False
        return [Persist()]
    if conv.status is Status.ENDED:
        return [StartTimer("survey", ctx.service.timers.survey_timeout)]
    return []


def handle(
    conv: Conversation, event: Event, now: datetime, ctx: Context
) -> tuple[Conversation, list[Effect]]:
    """Apply ``event``; raises :class:`Rejected` (changing nothing) when the rules refuse it."""
    # A resend of a stored message gets its ack again whatever happened since (even after the
    # conversation ended): the client only lost the ack, the message was accepted.
    if isinstance(event, VisitorMessage | OperatorMessage | BotAnswer):
        seen = conv.client_ids.get(_client_key(event))
        if seen is not None:
            party: Party = "operator" if isinstance(event, OperatorMessage) else "visitor"
            return conv, [Ack(party, event.client_id, seen)]
    if isinstance(event, VisitorMessage) and conv.status is Status.BOT:
        # While the bot talks, what the visitor writes answers it (a client that knows no
        # `bot_reply`, or a typed answer).
        if event.upload_id is not None:
            raise Rejected("invalid_state", "the bot takes no files; answer its question")
        event = BotAnswer(event.client_id, text=event.text)
    if isinstance(event, OWNER_EVENTS) and conv.operator_id != event.operator_id:
        raise Rejected("not_your_conversation", f"conversation {conv.id} is not yours")
    allowed = TRANSITIONS[type(event)]
    target = allowed.get(conv.status)
    if target is None:
        if isinstance(event, Offer):
            # Routing raced with the visitor leaving: give the reserved slot back.
            return conv, [Release(event.operator_id)]
        if type(event) in INTERNAL_EVENTS:
            return conv, []
        raise Rejected(
            "invalid_state",
            f"{_event_name(event)} is not allowed while the conversation is {conv.status.value}",
        )
    return conv, _HANDLERS[type(event)](conv, event, now, ctx, target)


def validate_text(text: str) -> None:
    if not text.strip():
        raise Rejected("invalid_frame", "message text is empty")
    if len(text) > MAX_TEXT:
        raise Rejected("message_too_long", f"message text is longer than {MAX_TEXT} characters")


def validate_answers(
    questions: tuple[SurveyQuestion, ...], answers: Mapping[str, Any]
) -> dict[str, Any]:
    """The accepted answers, or :class:`Rejected` with code ``invalid_survey``."""
    known = {q.id: q for q in questions}
    unknown = sorted(set(answers) - set(known))
    if unknown:
        raise Rejected("invalid_survey", f"unknown survey question(s): {', '.join(unknown)}")
    accepted: dict[str, Any] = {}
    for q in questions:
        value = answers.get(q.id)
        if value is None:
            if q.required:
                raise Rejected("invalid_survey", f"question {q.id!r} needs an answer")
            continue
        if q.kind in ("rating", "scale"):
            if type(value) is not int or not q.min <= value <= q.max:
                raise Rejected(
                    "invalid_survey",
                    f"{q.id!r} must be a whole number from {q.min} to {q.max}",
                )
        elif q.kind == "choice":
            if value not in q.options:
                raise Rejected("invalid_survey", f"{q.id!r} must be one of: {', '.join(q.options)}")
        elif not isinstance(value, str) or len(value) > q.max_length:
            raise Rejected(
                "invalid_survey", f"{q.id!r} must be text of at most {q.max_length} characters"
            )
        accepted[q.id] = value
    return accepted


# --- the survey by link ------------------------------------------------------------------------

#: What a survey link leads to: the questions (``open``), or why not — answered (or declined)
#: already, past its deadline, no survey to answer (none was offered, or the service asks none
#: any more), or a link this server did not sign (``invalid``: the edge says so, from the token).
LinkSurvey = Literal["open", "answered", "expired", "none", "invalid"]


class SurveyRefused(Exception):
    """A survey by link that cannot be answered; ``reason`` says why (never ``open``)."""

    MESSAGES: ClassVar[dict[LinkSurvey, str]] = {
        "answered": "this survey was answered already",
        "expired": "this survey can no longer be answered",
        "none": "this conversation has no survey to answer",
        "invalid": "this survey link is not valid",
    }

    def __init__(self, reason: LinkSurvey) -> None:
        super().__init__(self.MESSAGES[reason])
        self.reason = reason
        self.message = self.MESSAGES[reason]


@dataclass(frozen=True, slots=True)
class LinkedSurvey:
    """What a survey link leads to: where the survey stands, and — for a link the server
    signed — the conversation and its service (the page's language and colours)."""

    state: LinkSurvey
    conversation: Conversation | None = None
    service: Service | None = None


def survey_deadline(conv: Conversation, service: Service) -> datetime | None:
    """Until when the conversation's survey may be answered by link: the service's
    ``timers.survey_link_timeout`` after the conversation ended. None when its survey does not
    wait for an answer (none was offered, or it was answered or declined)."""
    if conv.survey != "pending" or conv.ended_at is None:
        return None
    return conv.ended_at + timedelta(seconds=service.timers.survey_link_timeout)


def survey_status(
    conv: Conversation, service: Service, now: datetime
) -> Literal["pending", "answered", "skipped", "expired"] | None:
    """The conversation's :data:`SurveyState` as the API shows it: a pending survey past its
    deadline is ``expired``."""
    deadline = survey_deadline(conv, service)
    if deadline is not None and now >= deadline:
        return "expired"
    return conv.survey


def survey_by_link(conv: Conversation, service: Service, now: datetime) -> LinkSurvey:
    """Where the conversation's survey stands for its link at ``now``: ``open`` while it waits
    for an answer (the conversation ``ended``, or already ``closed`` when the page's survey
    timed out or was never shown) and before its deadline; once answered or declined,
    ``answered`` for good."""
    if conv.survey in ("answered", "skipped"):
        return "answered"
    deadline = survey_deadline(conv, service)
    if deadline is None or not service.questions():
        return "none"
    if now >= deadline:
        return "expired"
    return "open"


def answer_closed_survey(
    conv: Conversation, answers: Mapping[str, Any] | None, now: datetime, ctx: Context
) -> list[Effect]:
    """The one thing a closed conversation still takes: the answer to its survey by link
    (``answers``; None: the visitor declines it), once, while :func:`survey_by_link` says
    ``open`` — else :class:`SurveyRefused`. The answers are checked as in the page
    (:func:`validate_answers`, :class:`Rejected` ``invalid_survey``). Nothing is emitted: the
    conversation's history ended with ``closed``; the answers are stored against it, as the
    page's would have been. (An ``ended`` conversation's survey is answered by
    :class:`SurveyAnswered` / :class:`SurveySkipped`, which close it.)"""
    if conv.status is not Status.CLOSED:
        raise ValueError(f"conversation {conv.id} is {conv.status.value}, not closed")
    state = survey_by_link(conv, ctx.service, now)
    if state != "open":
        raise SurveyRefused(state)
    if answers is None:
        conv.survey = "skipped"
        return [SaveSurvey(None)]
    accepted = validate_answers(ctx.service.questions(), answers)
    conv.survey = "answered"
    return [SaveSurvey(accepted)]


def closing_text(service: Service, link: str | None) -> str:
    """The closing message as a channel without a survey page of its own sends it: followed
    by the service's ``survey_link_message`` with ``link`` when the service says so
    (``survey_link``) and there is a survey to answer (``link`` not None)."""
    if not service.survey_link or link is None:
        return service.closing_message
    invitation = service.survey_link_message.replace("{link}", link)
    return f"{service.closing_message}\n\n{invitation}" if service.closing_message else invitation


# --- handlers (called only with an allowed status; they may assume it) --------------------------


def _event_name(event: Event) -> str:
    return type(event).__name__


def _emit(
    conv: Conversation, audience: Audience, kind: Callable[..., p.Event], **fields: Any
) -> Emit:
    """The next event of the conversation: its frame with the next ``seq``."""
    conv.last_seq += 1
    frame = kind(conversation_id=conv.id, seq=conv.last_seq, **fields)
    return Emit(frame, audience, conv.operator_id)


def _client_key(event: VisitorMessage | OperatorMessage | BotAnswer) -> tuple[str, str]:
    """Whose ``client_id`` space a send belongs to: the visitor's, or one operator's."""
    if isinstance(event, VisitorMessage | BotAnswer):
        return ("v", event.client_id)
    return (f"o{event.operator_id}", event.client_id)


def _message(
    conv: Conversation,
    ev: VisitorMessage | OperatorMessage,
    party: Party,
    author: p.Author,
    now: datetime,
    timers: Timers,
) -> list[Effect]:
    """A new message (a resend was answered by :func:`handle` before it got here)."""
    key = _client_key(ev)
    attachment: p.AttachmentRef | None = None
    if ev.upload_id is not None:
        upload = claimable(conv, ev, author)
        attachment = p.AttachmentRef(upload.id, upload.name, upload.size, upload.content_type)
        # A file's message says its name, or what was written with it (a channel's caption).
        text = ev.text or upload.name
        if ev.text:
            validate_text(text)
    else:
        text = ev.text
        validate_text(text)
    conv.last_seq += 1
    frame = p.Message(
        conversation_id=conv.id,
        seq=conv.last_seq,
        id=f"{conv.id}-{conv.last_seq}",
        author=author,
        text=text,
        at=now,
        attachment=attachment,
    )
    claims = attachment.id if attachment is not None else None
    emit = Emit(frame, "both", conv.operator_id, key, party, claims)
    conv.client_ids[key] = emit.seq
    effects: list[Effect] = [emit, Ack(party, key[1], emit.seq)]
    if conv.status is Status.ACTIVE:
        effects += _pass_turn(conv, "operator" if party == "visitor" else "visitor", timers)
    return effects


def claimable(
    conv: Conversation, ev: VisitorMessage | OperatorMessage, author: p.Author
) -> Attachment:
    """The upload an ``attachment`` frame names, if its sender may send it in a message now:
    an upload of this conversation (``unknown_attachment``: none, or another conversation's),
    by the sender (``not_your_attachment``), that no message carries yet
    (``attachment_claimed``)."""
    upload = ev.upload
    if upload is None or upload.id != ev.upload_id or upload.conversation_id != conv.id:
        raise Rejected("unknown_attachment", f"this conversation has no upload {ev.upload_id!r}")
    uploader = "visitor" if author.kind == "visitor" else f"operator:{author.id}"
    if upload.uploaded_by != uploader:
        raise Rejected("not_your_attachment", f"upload {upload.id} was not uploaded by you")
    if not upload.pending:
        raise Rejected("attachment_claimed", f"upload {upload.id} is in a message already")
    return upload


def _turn_timers(timers: Timers) -> dict[str, float | None]:
    return {
        "idle_warning": timers.visitor_idle_warning,
        "idle_close": timers.visitor_idle_close,
        "reply": timers.operator_reply,
    }


def _pass_turn(conv: Conversation, to: Party, timers: Timers) -> list[Effect]:
    """It is now ``to``'s turn to write: start the service's deadlines that run while it is
    (the visitor idle warning and close, or the operator's reply deadline) and cancel the
    others. A reply deadline counts from the first unanswered visitor message, not from the
    last one. Deadlines the service does not set cause no effect at all."""
    if to == conv.turn == "operator":
        return []  # already waiting for the operator: the deadline keeps counting
    conv.turn = to
    if (
        timers.visitor_idle_warning is None
        and timers.visitor_idle_close is None
        and timers.operator_reply is None
    ):
        return []  # the common case, on every message: nothing to start or cancel
    starting = ("idle_warning", "idle_close") if to == "visitor" else ("reply",)
    effects: list[Effect] = []
    for name, seconds in _turn_timers(timers).items():
        if seconds is not None:
            effects.append(StartTimer(name, seconds) if name in starting else CancelTimer(name))
    return effects


def _leave_active(conv: Conversation, timers: Timers) -> list[Effect]:
    """The conversation stops being active with its operator: no turn, no turn deadlines."""
    conv.turn = None
    return [CancelTimer(n) for n, seconds in _turn_timers(timers).items() if seconds is not None]


def _visitor_message(
    conv: Conversation, ev: VisitorMessage, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.status is Status.OUT_OF_HOURS:
        # Nobody reads along out of hours: the visitor leaves a message, not a flood.
        left = sum(1 for author, _ in conv.client_ids if author == "v")
        if left >= ctx.out_of_hours_messages:
            raise Rejected(
                "message_limit",
                f"this conversation takes at most {ctx.out_of_hours_messages} messages "
                "until an operator answers",
            )
    author = p.Author("visitor", conv.visitor.name)
    return _message(conv, ev, "visitor", author, now, ctx.service.timers)


def _operator_message(
    conv: Conversation, ev: OperatorMessage, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    author = p.Author("operator", conv.operator_name, ev.operator_id)
    return _message(conv, ev, "operator", author, now, ctx.service.timers)


def _bot_answer(
    conv: Conversation, ev: BotAnswer, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    state = conv.bot
    assert state is not None and state.script is not None
    try:
        shown, step = bots.answer(
            state,
            bots.Reply(ev.option, ev.text),
            _World(ctx, conv, now),
            person=ctx.service.bot_person,
        )
    except bots.BadReply as exc:
        raise Rejected("invalid_reply", str(exc)) from None
    key = _client_key(ev)
    conv.last_seq += 1
    frame = p.BotAnswered(
        conversation_id=conv.id,
        seq=conv.last_seq,
        id=f"{conv.id}-{conv.last_seq}",
        author=p.Author("visitor", conv.visitor.name),
        text=shown,
        at=now,
        option=ev.option,
    )
    emit = Emit(frame, "both", None, key, "visitor")
    conv.client_ids[key] = emit.seq
    _collect(conv)
    return [emit, Ack("visitor", key[1], emit.seq), *_bot_step(conv, step, now, ctx)]


def _bot_timeout(
    conv: Conversation, ev: BotTimeout, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _end(conv, "bot_timeout", now, ctx, to)


def _visitor_typing(
    conv: Conversation, ev: VisitorTyping, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return [Signal("operator", p.Typing(conv.id, p.Author("visitor")))]


def _operator_typing(
    conv: Conversation, ev: OperatorTyping, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return [Signal("visitor", p.Typing(conv.id, p.Author("operator", conv.operator_name)))]


def _offer(conv: Conversation, ev: Offer, now: datetime, ctx: Context, to: Status) -> list[Effect]:
    conv.status, conv.offered_to = to, ev.operator_id
    waited = round(max((now - conv.waiting_since).total_seconds(), 0.0), 3)
    timeout = ctx.service.timers.offer_timeout
    offer = p.Offer(conv.id, conv.summary(waited=waited), timeout)
    return [
        Persist(),
        Signal("operator", offer, operator_id=ev.operator_id),
        StartTimer("offer", timeout),
    ]


def _requeue(conv: Conversation, operator_id: int, withdraw_offer: bool) -> list[Effect]:
    assert conv.group_id is not None
    conv.status, conv.offered_to = Status.QUEUED, None
    effects: list[Effect] = [Release(operator_id), Persist(), EnterQueue(conv.group_id)]
    if withdraw_offer:
        effects.insert(0, _withdraw(conv, operator_id))
    return effects


def _withdraw(conv: Conversation, operator_id: int) -> Signal:
    return Signal("operator", p.OfferWithdrawn(conv.id), operator_id=operator_id)


def _offer_expired(
    conv: Conversation, ev: OfferExpired, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.offered_to != ev.operator_id:
        return []
    return _requeue(conv, ev.operator_id, withdraw_offer=True)


def _accept(
    conv: Conversation, ev: Accept, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.offered_to != ev.operator_id:
        raise Rejected("not_offered", f"conversation {conv.id} is not offered to you")
    return _take(conv, ev.operator_id, ev.operator_name, now, ctx, to)


def _take(
    conv: Conversation,
    operator_id: int,
    operator_name: str,
    now: datetime,
    ctx: Context,
    to: Status,
    before: list[Effect] | None = None,
) -> list[Effect]:
    """A waiting conversation becomes ``operator_id``'s, answered (an accepted offer, a
    supervisor's assignment): ``before`` are the effects of taking it from where it waited."""
    conv.status, conv.offered_to = to, None
    conv.operator_id, conv.operator_name = operator_id, operator_name
    conv.answered_at = conv.answered_at or now
    greeting = ctx.service.greeting.replace("{operator}", operator_name).replace(
        "{visitor}", conv.visitor.name
    )
    assigned = _assigned(conv, ctx)
    assert conv.group_id is not None
    effects: list[Effect] = [
        *(before or ()),
        CancelTimer("offer"),
        CancelTimer("queue"),
        Persist(),
        Answered(conv.group_id),
        ReplayHistory(operator_id, before=assigned.seq),
        assigned,
    ]
    if greeting:
        effects.append(
            _emit(
                conv,
                "both",
                p.Message,
                id=f"{conv.id}-{conv.last_seq + 1}",
                author=p.Author("operator", operator_name, operator_id),
                text=greeting,
                at=now,
            )
        )
    # Greeted, the visitor is to answer; otherwise they wait for the operator's first words.
    effects += _pass_turn(conv, "visitor" if greeting else "operator", ctx.service.timers)
    return effects


def _assigned(conv: Conversation, ctx: Context) -> Emit:
    assert conv.operator_id is not None and conv.operator_name is not None
    return _emit(
        conv,
        "both",
        p.Assigned,
        operator=p.OperatorRef(conv.operator_id, conv.operator_name),
        avatar=ctx.service.shown_avatar(),
        # The summary as of this event: active, with its operator.
        conversation=conv.summary(),
    )


def _transfer_to_group(
    conv: Conversation, ev: TransferToGroup, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _active_to_group(conv, ev.group_id, ev.group_name, ctx, to)


def _active_to_group(
    conv: Conversation, group_id: int, group_name: str, ctx: Context, to: Status
) -> list[Effect]:
    previous = conv.operator_id
    assert previous is not None
    # Emitted first, so that it still reaches the operator who held it.
    transferred = _emit(
        conv,
        "both",
        p.Transferred,
        to=p.TransferTarget("group", group_id, group_name),
        reason="transfer",
    )
    conv.status, conv.group_id = to, group_id
    conv.operator_id = conv.operator_name = None
    conv.grace_pending = False
    return [
        transferred,
        CancelTimer("grace"),
        *_leave_active(conv, ctx.service.timers),
        Release(previous),
        Persist(),
        EnterQueue(group_id),
    ]


def _transfer_to_operator(
    conv: Conversation, ev: TransferToOperator, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if ev.target_id == ev.operator_id:
        raise Rejected("invalid_transfer", "cannot transfer a conversation to yourself")
    return _active_to_operator(conv, ev.target_id, ev.target_name, ctx)


def _active_to_operator(
    conv: Conversation, target_id: int, target_name: str, ctx: Context
) -> list[Effect]:
    previous = conv.operator_id
    assert previous is not None
    transferred = _emit(
        conv,
        "both",
        p.Transferred,
        to=p.TransferTarget("operator", target_id, target_name),
        reason="transfer",
    )
    conv.operator_id, conv.operator_name = target_id, target_name
    conv.grace_pending = False
    assigned = _assigned(conv, ctx)
    effects: list[Effect] = [
        transferred,
        CancelTimer("grace"),
        Release(previous),
        Persist(),
        ReplayHistory(target_id, before=assigned.seq),
        assigned,
    ]
    reply = ctx.service.timers.operator_reply
    if conv.turn == "operator" and reply is not None:
        effects.append(StartTimer("reply", reply))  # the new operator gets a fresh deadline
    return effects


def _operator_left(
    conv: Conversation, ev: OperatorLeft, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.status is Status.OFFERED:
        if conv.offered_to != ev.operator_id:
            return []
        return [CancelTimer("offer"), *_requeue(conv, ev.operator_id, withdraw_offer=False)]
    if conv.operator_id != ev.operator_id or conv.grace_pending:
        return []
    conv.grace_pending = True
    return [Persist(), StartTimer("grace", ctx.operator_grace)]


def _operator_returned(
    conv: Conversation, ev: OperatorReturned, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.operator_id != ev.operator_id or not conv.grace_pending:
        return []
    conv.grace_pending = False
    return [Persist(), CancelTimer("grace")]


def _grace_expired(
    conv: Conversation, ev: GraceExpired, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.operator_id != ev.operator_id or not conv.grace_pending:
        return []
    conv.operator_id = None  # gone: the event is for the visitor (and the history) only
    return _back_to_group(conv, ev.operator_id, "operator_disconnected", ctx, to)


def _reply_timeout(
    conv: Conversation, ev: OperatorReplyTimeout, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    """The operator left the visitor unanswered too long: the conversation goes back to its
    group's queue at its original place, to be offered to someone else first."""
    if (
        conv.operator_id != ev.operator_id
        or conv.turn != "operator"
        or ctx.service.timers.operator_reply is None
    ):
        return []
    # The operator still holds it while the event is emitted, so they are told too.
    effects = _back_to_group(conv, ev.operator_id, "operator_reply_timeout", ctx, to)
    effects.insert(1, CancelTimer("grace"))
    return effects


def _back_to_group(
    conv: Conversation, operator_id: int, reason: p.TransferReason, ctx: Context, to: Status
) -> list[Effect]:
    """An active conversation leaves ``operator_id`` for its group's queue, at its original
    place; ``transferred`` goes to the visitor and to ``conv.operator_id`` if still set. An
    operator who let the visitor down (no reply) ranks last for the next offer."""
    assert conv.group_id is not None
    transferred = _emit(
        conv,
        "both",
        p.Transferred,
        to=p.TransferTarget("group", conv.group_id, ctx.group_names.get(conv.group_id, "")),
        reason=reason,
    )
    conv.status, conv.operator_id, conv.operator_name = to, None, None
    conv.grace_pending = False
    return [
        transferred,
        *_leave_active(conv, ctx.service.timers),
        Release(operator_id, rank_last=reason == "operator_reply_timeout"),
        Persist(),
        EnterQueue(conv.group_id),
    ]


def _idle_warning(
    conv: Conversation, ev: VisitorIdleWarning, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    """The visitor has been silent since the operator wrote: warn (both sides see it)."""
    timers = ctx.service.timers
    if conv.turn != "visitor" or timers.visitor_idle_warning is None:
        return []  # the visitor wrote meanwhile, or the service no longer warns
    closes_in = None
    if timers.visitor_idle_close is not None and timers.visitor_idle_warning is not None:
        closes_in = round(timers.visitor_idle_close - timers.visitor_idle_warning, 3)
    return [_emit(conv, "both", p.IdleWarning, closes_in=closes_in)]


def _idle_close(
    conv: Conversation, ev: VisitorIdleClose, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.turn != "visitor" or ctx.service.timers.visitor_idle_close is None:
        return []
    return _end(conv, "visitor_idle", now, ctx, to)


def _end(conv: Conversation, by: EndedBy, now: datetime, ctx: Context, to: Status) -> list[Effect]:
    conv.ended_by = by
    conv.ended_at = now
    if conv.status is Status.BOT:
        # The visitor left the bot (ended, went away, fell silent) at its question.
        assert conv.bot is not None
        bots.dropped(conv.bot)
        conv.status = to
        return [
            CancelTimer("bot"),
            CancelTimer("absent"),
            Persist(),
            _emit(conv, "visitor", p.Ended, by=by),
            _emit(conv, "visitor", p.Closed, message=ctx.service.closing_message),
        ]
    if to is Status.ABANDONED:
        effects: list[Effect] = [CancelTimer("queue")]
        if conv.status is Status.OFFERED and conv.offered_to is not None:
            effects += [
                CancelTimer("offer"),
                _withdraw(conv, conv.offered_to),
                Release(conv.offered_to),
            ]
        assert conv.group_id is not None
        if conv.status is Status.QUEUED:
            effects.append(LeaveQueue(conv.group_id))
        conv.status, conv.offered_to = to, None
        effects += [
            Persist(),
            _emit(conv, "visitor", p.Ended, by=by),
            _emit(conv, "visitor", p.Closed, message=ctx.service.closing_message),
        ]
        return effects
    operator_id = conv.operator_id
    assert operator_id is not None
    conv.status, conv.grace_pending = to, False
    effects = [
        CancelTimer("grace"),
        *_leave_active(conv, ctx.service.timers),
        Release(operator_id),
        _emit(conv, "both", p.Ended, by=by),
    ]
    questions = ctx.service.questions()
    if questions:
        conv.survey = "pending"
        if conv.channel is not None:
            # A messaging app shows no survey page: the conversation closes now, and its
            # survey waits for the link its closing message carries (survey by link).
            return effects + _close(conv, ctx)
        effects += [
            Persist(),
            _emit(conv, "visitor", p.Survey, questions=tuple(map(p.Question.of, questions))),
            StartTimer("survey", ctx.service.timers.survey_timeout),
        ]
        return effects
    return effects + _close(conv, ctx)


def _close(conv: Conversation, ctx: Context) -> list[Effect]:
    conv.status = Status.CLOSED
    return [Persist(), _emit(conv, "both", p.Closed, message=ctx.service.closing_message)]


def _queue_timeout(
    conv: Conversation, ev: QueueTimeout, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _end(conv, "queue_timeout", now, ctx, to)


def _visitor_detached(
    conv: Conversation, ev: VisitorDetached, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return [StartTimer("absent", ctx.absent_visitor_timeout)]


def _visitor_attached(
    conv: Conversation, ev: VisitorAttached, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return [CancelTimer("absent")]


def _visitor_gone(
    conv: Conversation, ev: VisitorGone, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _end(conv, "visitor_gone", now, ctx, to)


def _visitor_end(
    conv: Conversation, ev: VisitorEnd, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _end(conv, "visitor", now, ctx, to)


def _operator_end(
    conv: Conversation, ev: OperatorEnd, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    return _end(conv, "operator", now, ctx, to)


def _survey_answered(
    conv: Conversation, ev: SurveyAnswered, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    answers = validate_answers(ctx.service.questions(), ev.answers)
    conv.survey = "answered"
    return [CancelTimer("survey"), SaveSurvey(answers), *_close(conv, ctx)]


def _survey_skipped(
    conv: Conversation, ev: SurveySkipped, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    conv.survey = "skipped"
    return [CancelTimer("survey"), SaveSurvey(None), *_close(conv, ctx)]


def _survey_expired(
    conv: Conversation, ev: SurveyExpired, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    """The page's survey waited long enough: the conversation closes, without answers — but
    the survey stays pending, so that it may still be answered by link until its deadline."""
    return [CancelTimer("survey"), *_close(conv, ctx)]


def _resume_by_operator(
    conv: Conversation, ev: ResumeByOperator, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    conv.status, conv.group_id = to, ev.group_id
    conv.operator_id, conv.operator_name = ev.operator_id, ev.operator_name
    conv.answered_at = conv.answered_at or now
    assigned = _assigned(conv, ctx)
    return [Persist(), ReplayHistory(ev.operator_id, before=assigned.seq), assigned]


def _out_of_waiting(conv: Conversation, keep_offer_to: int | None = None) -> list[Effect]:
    """Take a waiting conversation out of where it waits: its group's queue, or the offer
    pending with an operator (withdrawn, their slot freed — unless it is ``keep_offer_to``'s,
    who is about to get the conversation with that very slot)."""
    assert conv.group_id is not None
    if conv.status is Status.QUEUED:
        return [LeaveQueue(conv.group_id)]
    offered, conv.offered_to = conv.offered_to, None
    effects: list[Effect] = [CancelTimer("offer")]
    if offered is not None and offered != keep_offer_to:
        effects += [_withdraw(conv, offered), Release(offered)]
    return effects


def _supervisor_to_group(
    conv: Conversation, ev: SupervisorTransferToGroup, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.status is Status.ACTIVE:
        return _active_to_group(conv, ev.group_id, ev.group_name, ctx, to)
    if ev.group_id == conv.group_id:
        raise Rejected("invalid_transfer", f"conversation {conv.id} already waits in that group")
    effects = _out_of_waiting(conv)
    effects.append(
        _emit(
            conv,
            "both",
            p.Transferred,
            to=p.TransferTarget("group", ev.group_id, ev.group_name),
            reason="transfer",
        )
    )
    conv.status, conv.group_id = to, ev.group_id
    return [*effects, Persist(), EnterQueue(ev.group_id)]


def _supervisor_assign(
    conv: Conversation, ev: SupervisorAssign, now: datetime, ctx: Context, to: Status
) -> list[Effect]:
    if conv.status is Status.ACTIVE:
        if not ev.transfer:
            raise Rejected(
                "invalid_state",
                f"conversation {conv.id} is active: transfer it rather than assign it",
            )
        if ev.operator_id == conv.operator_id:
            raise Rejected("invalid_transfer", f"operator {ev.operator_id} already holds it")
        return _active_to_operator(conv, ev.operator_id, ev.operator_name, ctx)
    before = _out_of_waiting(conv, keep_offer_to=ev.operator_id)
    if ev.transfer:
        before.append(
            _emit(
                conv,
                "both",
                p.Transferred,
                to=p.TransferTarget("operator", ev.operator_id, ev.operator_name),
                reason="transfer",
            )
        )
    return _take(conv, ev.operator_id, ev.operator_name, now, ctx, to, before)


_HANDLERS: dict[type, Any] = {
    VisitorMessage: _visitor_message,
    BotAnswer: _bot_answer,
    BotTimeout: _bot_timeout,
    OperatorMessage: _operator_message,
    VisitorTyping: _visitor_typing,
    OperatorTyping: _operator_typing,
    Offer: _offer,
    OfferExpired: _offer_expired,
    Accept: _accept,
    TransferToGroup: _transfer_to_group,
    TransferToOperator: _transfer_to_operator,
    OperatorLeft: _operator_left,
    OperatorReturned: _operator_returned,
    GraceExpired: _grace_expired,
    VisitorEnd: _visitor_end,
    OperatorEnd: _operator_end,
    SurveyAnswered: _survey_answered,
    SurveySkipped: _survey_skipped,
    SurveyExpired: _survey_expired,
    QueueTimeout: _queue_timeout,
    VisitorDetached: _visitor_detached,
    VisitorAttached: _visitor_attached,
    VisitorGone: _visitor_gone,
    ResumeByOperator: _resume_by_operator,
    VisitorIdleWarning: _idle_warning,
    VisitorIdleClose: _idle_close,
    OperatorReplyTimeout: _reply_timeout,
    SupervisorTransferToGroup: _supervisor_to_group,
    SupervisorAssign: _supervisor_assign,
}
assert set(_HANDLERS) == set(TRANSITIONS), "every event of the table has a handler"
