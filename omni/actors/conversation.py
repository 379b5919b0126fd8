"""ConversationActor: one open conversation — its state machine, timers and fan-out.

Rules:

* The actor feeds events to :func:`omni.domain.conversation.handle` and carries out the effects
  in order. All of a step's stored effects (events, the conversation record, a survey) go to the
  store in one write *before* anything is acknowledged or delivered.
* Each event is encoded once; the same frame goes to the visitor, to the operator and into the
  store.
* Webhooks (the transactional outbox): the step's events that a subscription of the service
  wants become outbox deliveries in the step's own write, so an event is stored with its
  webhooks or not at all. A service with no subscription costs one dict lookup per step.
* Channels (issue 17) the same way: what a channel's visitor would have seen in the WebChat
  becomes outbox items of kind ``channel`` in the step's write, one per text (one per part of a
  text too long for the platform), in ``seq`` order.
* Refusals (:class:`Rejected`) go back to whoever sent the event as an ``error`` frame; nothing
  has changed. Any other exception crashes this actor only: its visitor connection is closed (the
  client resumes and gets the missed events from the store) and the supervisor restarts the actor
  from the store.
* One store failure is a refusal instead: a message's upload deleted by the clean-up job
  between the lookup and the write that claims it (:class:`AttachmentClaimFailed`). For a
  message carrying an upload — and only then: plain messages are the hot path — the state is
  copied before the rules change it in place, and put back if the write fails that way; the
  sender gets ``unknown_attachment`` and the conversation goes on as if the frame never came.
* Timers are set and cancelled by effects; their firing comes back through the mailbox as an
  ordinary event.
* The actor sees the server only through :class:`ConversationHost`: what it needs, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from omni.actors.peer import History, Peer
from omni.actors.queue import QueueEntry, VisitorLink
from omni.actors.runtime import Actor, ActorRef, Timer
from omni.clock import Clock
from omni.domain import conversation as domain
from omni.domain import protocol as p
from omni.domain.channels import channel_parts, channel_text
from omni.domain.conversation import (
    Ack,
    Answered,
    CancelTimer,
    Conversation,
    Emit,
    EnterQueue,
    Event,
    LeaveQueue,
    Persist,
    Rejected,
    Release,
    ReplayHistory,
    ResumeByOperator,
    SaveSurvey,
    Signal,
    StartTimer,
    Status,
    SupervisorAssign,
    TransferToOperator,
)
from omni.domain.model import Webhook
from omni.domain.routing import CapacityExceeded, Roster
from omni.domain.webhooks import webhook_events
from omni.store import (
    ADOPT_CHANNEL,
    AttachmentClaimFailed,
    Fence,
    FencedOut,
    Notice,
    OutboxEntry,
    Store,
    StoredEvent,
    Write,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Apply:
    """A domain event; refusals go to ``origin`` as an error frame."""

    event: Event
    origin: Peer | None = None


@dataclass(frozen=True, slots=True)
class Effects:
    """Carry out effects computed elsewhere (the creation of the conversation)."""

    effects: list[domain.Effect]


@dataclass(frozen=True, slots=True)
class AttachVisitor:
    """The visitor (re)connected: replay what they missed after ``last_seq``, then go live."""

    peer: Peer
    last_seq: int


@dataclass(frozen=True, slots=True)
class DetachVisitor:
    peer: Peer


@dataclass(frozen=True, slots=True)
class SyncOperator:
    operator_id: int
    peer: Peer
    last_seq: int


@dataclass(frozen=True, slots=True)
class Summary:
    pass


ConversationMessage = Apply | Effects | AttachVisitor | DetachVisitor | SyncOperator | Summary


@dataclass
class ConversationEntry:
    """A running conversation in the server's registry: its address and what routing needs to
    know of it without asking (kept current by the actor)."""

    conversation_id: str
    link: VisitorLink
    status: Status
    group_id: int | None
    service_id: int
    ref: ActorRef[ConversationMessage] = field(init=False)


class OperatorLink(Protocol):
    """An operator's connection, as a conversation sees it."""

    def deliver(self, frame: str) -> None:
        """An ephemeral frame (no seq)."""
        ...

    def deliver_event(self, conversation_id: str, seq: int, frame: str) -> None:
        """A frame that carries ``seq`` (an event or an ack); remembered as sent."""
        ...

    def deliver_history(self, history: History) -> None:
        """A replay of stored events (see :class:`~omni.actors.peer.History`); remembered as
        sent up to ``history.before``."""
        ...

    def sent_up_to(self, conversation_id: str) -> int:
        """The highest seq of the conversation this connection was sent."""
        ...


class ConversationHost(Protocol):
    """What a conversation actor needs of the server around it."""

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def roster(self) -> Roster: ...

    @property
    def operator_grace(self) -> float: ...

    def context(self, service_id: int) -> domain.Context: ...

    def operator_link(self, operator_id: int) -> OperatorLink | None:
        """The operator's connection, if they are signed in."""
        ...

    async def enqueue(self, group_id: int, link: VisitorLink) -> None: ...

    def home(self, group_id: int | None, service_id: int) -> int | None:
        """The group whose lease the conversation runs under (cluster mode)."""
        ...

    def owns_group(self, group_id: int | None) -> bool:
        """Whether conversations of ``group_id`` run on this node (always, outside cluster
        mode)."""
        ...

    def fence_of(self, group_id: int | None) -> Fence | None:
        """The fence of a write of a conversation of ``group_id`` (None: no fence)."""
        ...

    def running(self, conversation_id: str) -> ConversationEntry | None:
        """The conversation's entry in the registry, if it runs here."""
        ...

    async def withdraw(self, group_id: int, conversation_id: str) -> None: ...

    def release(self, operator_id: int, conversation_id: str) -> None:
        """Free the operator's slot held by the conversation (their groups may dispatch)."""
        ...

    def forget(self, conversation_id: str) -> None:
        """The conversation has no actor any more (ended, or parked out of hours)."""
        ...

    def count_relayed(self) -> None:
        """A chat message was stored and delivered (metrics)."""
        ...

    def conversation_changed(self, conv: Conversation) -> None:
        """The conversation's record (status, group, operator, times) was stored anew (the
        supervisors' board); never called for a chat message."""
        ...

    def answered(self, group_id: int, entry: QueueEntry) -> None:
        """An operator took the conversation from ``group_id``'s queue, which it joined as
        ``entry`` says: the group's wait estimate learns from it."""
        ...

    def estimated_wait(self, group_id: int, ahead: int) -> int | None:
        """The group's current estimate for a visitor with ``ahead`` places to move."""
        ...

    def folder_changed(self, summary: p.ConversationSummary, entered: bool) -> None:
        """The conversation entered the out-of-hours folder, or left it (F4)."""
        ...

    def subscriptions(self, service_id: int) -> Mapping[str, tuple[Webhook, ...]]:
        """The service's active webhooks by the event they want (empty: none)."""
        ...

    def webhook_message_id(self) -> str:
        """A new webhook message id (``webhook-id``): unique, shared by the subscriptions that
        get the same event."""
        ...

    def webhooks_queued(self, count: int) -> None:
        """``count`` webhook deliveries were stored: the outbox may send them."""
        ...

    def channel_replies_queued(self, count: int) -> None:
        """``count`` replies to a channel were stored: the outbox may send them."""
        ...

    def survey_url(self, conv: Conversation) -> str | None:
        """The link to the conversation's survey page while its survey waits for an answer
        (a channel's closing message carries it); None: none."""
        ...


def check_last_seq(conv: Conversation, last_seq: int) -> None:
    if not 0 <= last_seq <= conv.last_seq:
        raise Rejected("invalid_seq", f"last_seq must be between 0 and {conv.last_seq}")


def replay_to_visitor(store: Store, conv: Conversation, last_seq: int, peer: Peer) -> None:
    """``resumed``, then exactly the visitor's stored events after ``last_seq``, in order (as a
    :class:`History`: read from the store as the visitor reads)."""
    peer.deliver(p.encode(p.Resumed(conv.id, conv.ticket, conv.status, conv.last_seq)))
    peer.deliver_history(History(store, conv.id, last_seq, conv.last_seq + 1, hidden="operator"))


class ConversationActor(Actor[ConversationMessage]):
    expected_errors = (Rejected,)

    def __init__(
        self,
        host: ConversationHost,
        entry: ConversationEntry,
        initial: Conversation | None,
        *,
        new: bool = False,
    ) -> None:
        self._host = host
        self._entry = entry
        self._link: VisitorLink = entry.link
        #: The state to start from (else it is loaded from the store), and whether it is a new
        #: conversation (its first effects follow in the mailbox) or one put back into routing.
        self._initial = initial
        self._new = new
        self._conv: Conversation
        self._timers: dict[str, Timer] = {}
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Apply: self._on_apply,
            Effects: self._on_effects,
            AttachVisitor: self._on_attach,
            DetachVisitor: self._on_detach,
            SyncOperator: self._on_sync,
            Summary: self._on_summary,
        }

    async def started(self) -> None:
        conv, self._initial = self._initial, None
        if conv is None:
            conv = await self._host.store.load_conversation(self._entry.conversation_id)
            if conv is None:
                raise LookupError(f"conversation {self._entry.conversation_id} is not in the store")
        self._conv = conv
        self._entry.status = conv.status
        if self._new:
            return
        # Put back into routing — after a process restart, or a crash of the actor before this
        # incarnation: one path, whose rules are the domain's (queue place and timers, offer
        # withdrawn, grace period, survey).
        operator_id = conv.operator_id
        connected = operator_id is not None and self._host.operator_link(operator_id) is not None
        if conv.status is Status.ACTIVE and operator_id is not None:
            self._host.roster.hold(operator_id, conv.id)
        now = self._host.clock.now()
        await self._carry_out(domain.restore(conv, connected, self._ctx(), now), restoring=True)

    # -- dispatch -----------------------------------------------------------------------------

    async def handle(self, message: ConversationMessage) -> Any:
        return await self._handlers[type(message)](message)

    async def _on_apply(self, message: Apply) -> None:
        await self._apply(message.event)

    async def _on_effects(self, message: Effects) -> None:
        await self._carry_out(message.effects)

    async def _on_attach(self, message: AttachVisitor) -> None:
        check_last_seq(self._conv, message.last_seq)
        previous, self._link.peer = self._link.peer, message.peer
        if previous is not None and previous is not message.peer:
            previous.close("superseded", "this conversation was resumed on another connection")
        conv = self._conv
        replay_to_visitor(self._host.store, conv, message.last_seq, message.peer)
        link = self._link
        if conv.status is Status.QUEUED and link.position is not None:
            assert conv.group_id is not None
            # The position as last reported, with the estimate as it stands now.
            link.estimated_wait = self._host.estimated_wait(conv.group_id, link.position)
            message.peer.deliver(link.position_frame())
        await self._apply(domain.VisitorAttached())

    async def _on_detach(self, message: DetachVisitor) -> None:
        if self._link.peer is not message.peer:
            return
        self._link.peer = None
        if self._conv.status is Status.OUT_OF_HOURS:
            # Nothing will happen to it until someone comes back: free the actor; the server
            # restores it from the store when the visitor or an operator returns.
            self._host.forget(self._conv.id)
            self.stop()
            return
        await self._apply(domain.VisitorDetached())

    async def _on_sync(self, message: SyncOperator) -> None:
        if self._conv.operator_id != message.operator_id:
            raise Rejected("not_your_conversation", f"conversation {self._conv.id} is not yours")
        check_last_seq(self._conv, message.last_seq)
        self._replay_to_operator(
            message.operator_id, self._conv.last_seq + 1, after=message.last_seq
        )

    async def _on_summary(self, message: Summary) -> p.ConversationSummary:
        return self._conv.summary()

    def on_rejected(self, message: ConversationMessage, error: Exception) -> None:
        assert isinstance(error, Rejected)
        origin = getattr(message, "origin", None) or getattr(message, "peer", None)
        if origin is not None:
            client_id = getattr(getattr(message, "event", None), "client_id", None)
            origin.deliver(
                p.error_frame(
                    error.code, error.message, conversation_id=self._conv.id, client_id=client_id
                )
            )

    def on_crash(self, error: BaseException) -> None:
        peer, self._link.peer = self._link.peer, None
        if peer is not None:
            peer.close("internal_error", "the conversation failed; resume to continue")

    # -- applying events ------------------------------------------------------------------------

    def _ctx(self) -> domain.Context:
        return self._host.context(self._conv.service_id)

    async def _apply(self, event: Event) -> None:
        # For a message carrying an upload: the state before the rules change it.
        before: Conversation | None = None
        upload_id: str | None = None
        if (
            isinstance(event, domain.VisitorMessage | domain.OperatorMessage)
            and event.upload_id is not None
        ):
            upload_id = event.upload_id
            # The rules decide on what the store knows of the upload. This actor is the only
            # one that claims this conversation's uploads, but the clean-up job may delete a
            # pending one before the message's write claims it: keep the state to go back to.
            found = await self._host.store.attachment(event.upload_id)
            event = replace(event, upload=found)
            before = replace(self._conv, client_ids=dict(self._conv.client_ids))
        reserved: int | None = None
        if isinstance(event, TransferToOperator | ResumeByOperator | SupervisorAssign):
            # Reserve the target's slot first (no await between check and reserve), so the rules
            # see a transfer that is already known to fit.
            target = event.target_id if isinstance(event, TransferToOperator) else event.operator_id
            if self._reserve(target):
                reserved = target
        try:
            _, effects = domain.handle(self._conv, event, self._host.clock.now(), self._ctx())
        except Rejected:
            if reserved is not None:
                self._host.release(reserved, self._conv.id)
            raise
        if before is None:
            await self._carry_out(effects)
        else:
            try:
                await self._carry_out(effects)
            except AttachmentClaimFailed:
                # Nothing was stored, acknowledged or delivered (the write comes first).
                self._conv = before
                raise Rejected(
                    "unknown_attachment",
                    f"upload {upload_id} is no longer kept (pending too long); upload it again",
                ) from None
        if (
            isinstance(event, domain.Offer)
            and self._conv.offered_to == event.operator_id
            and self._host.operator_link(event.operator_id) is None
        ):
            # The operator left between the pick and the offer.
            await self._apply(domain.OperatorLeft(event.operator_id))

    def _reserve(self, operator_id: int) -> bool:
        """Take a slot of the operator's capacity; False if this conversation already has one
        (then nothing is to be given back if the rules refuse the event)."""
        roster = self._host.roster
        if operator_id in roster and self._conv.id in roster.get(operator_id).load:
            return False
        if self._host.operator_link(operator_id) is None:
            raise Rejected("operator_unavailable", f"operator {operator_id} is not connected")
        try:
            roster.reserve(operator_id, self._conv.id, self._host.clock.monotonic())
        except CapacityExceeded:
            raise Rejected(
                "operator_unavailable", f"operator {operator_id} has no free capacity"
            ) from None
        return True

    async def _carry_out(self, effects: list[domain.Effect], *, restoring: bool = False) -> None:
        """``restoring``: the effects put the conversation back into routing after a restart;
        nothing happened to it, so they make no webhook."""
        conv = self._conv
        write = Write()
        # Each event is encoded once: the stored frame is the delivered frame.
        frames: dict[int, str] = {}
        for effect in effects:
            if isinstance(effect, Emit):
                frame = frames[effect.seq] = p.encode(effect.frame)
                write.events.append(
                    StoredEvent(
                        conv.id, effect.seq, effect.kind, effect.audience, frame, effect.client_key
                    )
                )
                if effect.claims is not None:
                    assert isinstance(effect.frame, p.Message)
                    write.claims.append((effect.claims, effect.frame.at))
            elif isinstance(effect, Persist):
                write.conversation = conv
            elif isinstance(effect, SaveSurvey):
                write.conversation = conv
                write.survey = effect.answers
                write.survey_skipped = effect.answers is None
        subscribed = self._host.subscriptions(conv.service_id)
        if subscribed and not restoring:
            self._queue_webhooks(write, effects, frames, subscribed)
        replies = 0
        if conv.channel is not None and not restoring:
            replies = self._queue_channel_replies(write, effects)
        if write.events or write.conversation is not None or write.outbox:
            if self._host.running(conv.id) is not self._entry:
                # A stopped incarnation handling what was left in its mailbox (its group lost,
                # fenced out, moved away or freed): its state may be stale and another may run
                # the conversation now — under whatever lease this node holds again. Nothing of
                # it is written; the sender retries, and reaches the one that runs it.
                self.stop()
                raise Rejected("overloaded", "the conversation was not taking frames; retry")
            # Cluster mode: written under the lease of the group it was in (its service's first
            # when in none); outside it, no fence.
            home = self._host.home(self._entry.group_id, conv.service_id)
            write.fence = self._host.fence_of(home)
            moving_to = self._host.home(conv.group_id, conv.service_id)
            if moving_to != home and not self._host.owns_group(moving_to):
                # Into a group another node owns (a transfer, a bot's hand-over): that node
                # adopts it as soon as this commits.
                write.notices.append(Notice(ADOPT_CHANNEL, str(moving_to)))
            try:
                await self._host.store.write(write)
            except FencedOut:
                # Another node owns the group now (or this node's lease ran out): nothing was
                # stored; this actor stops and its visitor resumes on the owner.
                log.warning("conversation %s: fenced out; another node owns it", conv.id)
                self._move_away()
                return
        if len(write.outbox) > replies:
            self._host.webhooks_queued(len(write.outbox) - replies)
        if replies:
            self._host.channel_replies_queued(replies)
        was = self._entry.status
        self._entry.status = conv.status
        self._entry.group_id = conv.group_id
        if not self._host.owns_group(self._host.home(conv.group_id, conv.service_id)):
            # Cluster mode: it entered a group another node owns (a bot handed it over, a
            # transfer); stored, it is that node's to restore (it adopts it at its next beat).
            self._move_away()
            return
        if write.conversation is not None:
            self._host.conversation_changed(conv)
        for effect in effects:
            if isinstance(effect, Emit):
                self._deliver_event(effect, frames[effect.seq])
                continue
            # Most effects are carried out at once; those that must wait return an awaitable.
            pending = self._effect_handlers[type(effect)](self, effect)
            if pending is not None:
                await pending
        # The folder of out-of-hours conversations (F4) follows the stored status: a new one
        # enters it with its `out_of_hours` notice, and it leaves it however its status changes.
        if any(isinstance(e, Emit) and isinstance(e.frame, p.OutOfHours) for e in effects):
            self._host.folder_changed(conv.summary(), entered=True)
        elif was is Status.OUT_OF_HOURS and conv.status is not Status.OUT_OF_HOURS:
            self._host.folder_changed(conv.summary(), entered=False)
        if conv.status in domain.TERMINAL_STATUSES:
            self._host.forget(conv.id)
            self.stop()

    def _move_away(self) -> None:
        """Stop running here (cluster mode): the visitor's socket closes with ``moved``."""
        peer, self._link.peer = self._link.peer, None
        if peer is not None:
            peer.close("moved", "this conversation is now served by another node; resume")
        if self._host.running(self._conv.id) is self._entry:
            self._host.forget(self._conv.id)
        self.stop()

    def _queue_webhooks(
        self,
        write: Write,
        effects: list[domain.Effect],
        frames: dict[int, str],
        subscribed: Mapping[str, tuple[Webhook, ...]],
    ) -> None:
        conv, now = self._conv, self._host.clock.now()
        for event in webhook_events(conv, effects, frames, now, subscribed):
            message_id = self._host.webhook_message_id()
            payload = {"id": message_id, "type": event.type}
            for hook in subscribed[event.type]:
                write.outbox.append(
                    OutboxEntry(
                        "webhook",
                        f"webhook:{hook.id}:{message_id}",
                        conv.id,
                        payload,
                        now,
                        hook.id,
                        event.body,
                    )
                )

    def _queue_channel_replies(self, write: Write, effects: list[domain.Effect]) -> int:
        """A channel's conversation (the transactional outbox, as webhooks): what its visitor
        would have seen in the WebChat goes out as the channel's text, from the outbox, in
        order (one head per conversation), stored with the step's events. How many."""
        conv, now = self._conv, self._host.clock.now()
        assert conv.channel is not None
        service = self._host.context(conv.service_id).service
        queued = 0
        for effect in effects:
            if not isinstance(effect, Emit) or effect.audience == "operator":
                continue
            text = channel_text(effect.frame, service, lambda: self._host.survey_url(conv))
            if text is None:
                continue
            # A text too long for the platform goes as several items, each delivered (and
            # retried) on its own: a retry never sends again a part that went.
            parts = channel_parts(conv.channel.kind, text)
            for number, part in enumerate(parts, 1):
                payload: dict[str, object] = {
                    "channel": conv.channel.id,
                    "to": conv.channel_user,
                    "text": part,
                    "seq": effect.seq,
                }
                key = f"channel:{conv.id}:{effect.seq}"
                if len(parts) > 1:
                    payload |= {"part": number, "parts": len(parts)}
                    key += f".{number}"
                frame = effect.frame
                if isinstance(frame, p.Message) and frame.attachment is not None:
                    # The sender links the file (a link minted at each attempt, long-lived).
                    file = frame.attachment
                    payload["attachment"] = {"id": file.id, "name": file.name, "type": file.type}
                write.outbox.append(
                    OutboxEntry(
                        "channel", key, conv.id, payload, now, f"channel:{conv.channel.id}", None
                    )
                )
                queued += 1
        return queued

    # -- effects after the write, by type ---------------------------------------------------------

    def _ack(self, effect: Ack) -> None:
        frame = p.encode(p.Ack(self._conv.id, effect.client_id, effect.seq))
        if effect.to == "visitor":
            if self._link.peer is not None:
                self._link.peer.deliver(frame)
        elif self._conv.operator_id is not None:
            link = self._host.operator_link(self._conv.operator_id)
            if link is not None:
                link.deliver_event(self._conv.id, effect.seq, frame)

    def _signal(self, effect: Signal) -> None:
        frame = p.encode(effect.frame)
        if effect.to == "visitor":
            if self._link.peer is not None:
                self._link.peer.deliver(frame)
            return
        operator_id = (
            effect.operator_id if effect.operator_id is not None else self._conv.operator_id
        )
        if operator_id is not None:
            link = self._host.operator_link(operator_id)
            if link is not None:
                link.deliver(frame)

    def _enter_queue(self, effect: EnterQueue) -> Awaitable[None]:
        return self._host.enqueue(effect.group_id, self._link)

    def _leave_queue(self, effect: LeaveQueue) -> Awaitable[None]:
        return self._host.withdraw(effect.group_id, self._conv.id)

    def _answered(self, effect: Answered) -> None:
        entry, self._link.entered = self._link.entered, None
        if entry is not None and entry.group_id == effect.group_id:
            self._host.answered(effect.group_id, entry)

    def _release(self, effect: Release) -> None:
        if effect.rank_last:
            self._host.roster.rank_last(effect.operator_id, self._host.clock.monotonic())
        self._host.release(effect.operator_id, self._conv.id)

    def _start(self, effect: StartTimer) -> None:
        self._start_timer(effect.name, effect.seconds)

    def _cancel(self, effect: CancelTimer) -> None:
        scope = self._timers.pop(effect.name, None)
        if scope is not None:
            scope.cancel()

    def _replay(self, effect: ReplayHistory) -> None:
        self._replay_to_operator(effect.operator_id, effect.before)

    def _stored(self, effect: Persist | SaveSurvey) -> None:
        """Written with the step's other stored effects, before any of these ran."""

    #: Effect type -> its handler: None when done at once, else what to await.
    _effect_handlers: dict[type, Callable[[Any, Any], Awaitable[None] | None]] = {
        Ack: _ack,
        Signal: _signal,
        EnterQueue: _enter_queue,
        LeaveQueue: _leave_queue,
        Answered: _answered,
        Release: _release,
        StartTimer: _start,
        CancelTimer: _cancel,
        ReplayHistory: _replay,
        Persist: _stored,
        SaveSurvey: _stored,
    }

    def _start_timer(self, name: str, seconds: float) -> None:
        previous = self._timers.pop(name, None)
        if previous is not None:
            previous.cancel()
        self._timers[name] = self.call_later(seconds, Apply(self._timer_event(name)))

    def _timer_event(self, name: str) -> Event:
        conv = self._conv
        if name == "offer" and conv.offered_to is not None:
            return domain.OfferExpired(conv.offered_to)
        if name == "grace" and conv.operator_id is not None:
            return domain.GraceExpired(conv.operator_id)
        if name == "survey":
            return domain.SurveyExpired()
        if name == "queue":
            return domain.QueueTimeout()
        if name == "absent":
            return domain.VisitorGone()
        if name == "bot":
            return domain.BotTimeout()
        # The turn timers: stale ones (the turn passed meanwhile) are ignored by the rules.
        if name == "idle_warning":
            return domain.VisitorIdleWarning()
        if name == "idle_close":
            return domain.VisitorIdleClose()
        if name == "reply":
            return domain.OperatorReplyTimeout(conv.operator_id or 0)
        raise ValueError(f"no timer {name!r} in status {conv.status.value}")

    # -- delivery -------------------------------------------------------------------------------

    def _deliver_event(self, effect: Emit, frame: str) -> None:
        if (
            effect.audience != "operator"
            and effect.sender != "visitor"
            and self._link.peer is not None
        ):
            self._link.peer.deliver(frame)
        if (
            effect.audience != "visitor"
            and effect.sender != "operator"
            and effect.operator_id is not None
        ):
            link = self._host.operator_link(effect.operator_id)
            if link is not None:
                link.deliver_event(self._conv.id, effect.seq, frame)
        if isinstance(effect.frame, p.Message):
            self._host.count_relayed()

    def _replay_to_operator(self, operator_id: int, before: int, after: int | None = None) -> None:
        """Send the operator's connection the events it lacks below ``before``: after ``after``
        when the client said what it has (sync), else after the last one this connection was
        sent — so an operator who held the conversation before gets only what is new to them.
        The replay is read from the store as the console reads it."""
        link = self._host.operator_link(operator_id)
        if link is None:
            return
        if after is None:
            after = link.sent_up_to(self._conv.id)
        store = self._host.store
        link.deliver_history(History(store, self._conv.id, after, before, hidden="visitor"))
