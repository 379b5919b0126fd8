"""ConversationActor: one open conversation — its state machine, timers and fan-out.

Rules:

* The actor feeds events to :func:`omni.domain.conversation.handle` and carries out the effects
  in order. All of a step's stored effects (events, the conversation record, a survey) go to the
  store in one write *before* anything is acknowledged or delivered.
* Each event is encoded once; the same frame goes to the visitor and to the operator.
* Refusals (:class:`Rejected`) go back to whoever sent the event as an ``error`` frame; nothing
  has changed. Any other exception crashes this actor only: its visitor connection is closed (the
  client resumes and gets the missed events from the store) and the supervisor restarts the actor
  from the store.
* Timers are set and cancelled by effects; their firing comes back through the mailbox as an
  ordinary event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from omni.actors.group import Enqueue, Withdraw
from omni.actors.peer import Peer, encode, error_frame
from omni.actors.queue import VisitorLink
from omni.actors.runtime import Actor
from omni.domain import conversation as domain
from omni.domain.conversation import (
    Ack,
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
    TransferToOperator,
)
from omni.domain.routing import CapacityExceeded
from omni.store import Store, StoredEvent, Write

if TYPE_CHECKING:
    from omni.actors.hub import ConversationEntry, Hub


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


def check_last_seq(conv: Conversation, last_seq: int) -> None:
    if not 0 <= last_seq <= conv.last_seq:
        raise Rejected("invalid_seq", f"last_seq must be between 0 and {conv.last_seq}")


async def replay_to_visitor(store: Store, conv: Conversation, last_seq: int, peer: Peer) -> None:
    """``resumed``, then exactly the visitor's stored events after ``last_seq``, in order."""
    peer.deliver(
        encode(
            {
                "type": "resumed",
                "conversation_id": conv.id,
                "ticket": conv.ticket,
                "status": conv.status.value,
                "last_seq": conv.last_seq,
            }
        )
    )
    for event in await store.events_after(conv.id, last_seq):
        if event.audience != "operator":
            peer.deliver(event.frame)


class ConversationActor(Actor[ConversationMessage]):
    expected_errors = (Rejected,)

    def __init__(self, hub: Hub, entry: ConversationEntry, initial: Conversation | None) -> None:
        self._hub = hub
        self._entry = entry
        self._link: VisitorLink = entry.link
        self._initial = initial
        self._conv: Conversation
        self._timers: dict[str, trio.CancelScope] = {}

    async def started(self) -> None:
        if self._initial is not None:
            self._conv, self._initial = self._initial, None
            return
        conv = await self._hub.store.load_conversation(self._entry.conversation_id)
        if conv is None:
            raise LookupError(f"conversation {self._entry.conversation_id} is not in the store")
        self._conv = conv
        # A restarted incarnation re-arms the timers its state implies.
        if conv.status is Status.OFFERED:
            self._start_timer("offer", self._ctx().service.timers.offer_timeout)
        elif conv.status is Status.ACTIVE and conv.grace_pending:
            self._start_timer("grace", self._hub.settings.operator_grace)
        elif conv.status is Status.ENDED:
            self._start_timer("survey", self._ctx().service.timers.survey_timeout)
        self._entry.status = conv.status

    # -- dispatch -----------------------------------------------------------------------------

    async def handle(self, message: ConversationMessage) -> Any:
        if isinstance(message, Apply):
            await self._apply(message.event)
        elif isinstance(message, Effects):
            await self._carry_out(message.effects)
        elif isinstance(message, AttachVisitor):
            await self._attach(message.peer, message.last_seq)
        elif isinstance(message, DetachVisitor):
            if self._link.peer is message.peer:
                self._link.peer = None
                if self._conv.status is Status.OUT_OF_HOURS:
                    # Nothing will happen to it until someone comes back: free the actor; the
                    # hub restores it from the store when the visitor or an operator returns.
                    self._hub.forget(self._conv.id)
                    self.stop()
        elif isinstance(message, SyncOperator):
            await self._sync(message)
        elif isinstance(message, Summary):
            return self._conv.summary()
        else:
            raise TypeError(f"unexpected message {message!r}")
        return None

    def on_rejected(self, message: ConversationMessage, error: Exception) -> None:
        assert isinstance(error, Rejected)
        origin = getattr(message, "origin", None) or getattr(message, "peer", None)
        if origin is not None:
            extra: dict[str, Any] = {"conversation_id": self._conv.id}
            client_id = getattr(getattr(message, "event", None), "client_id", None)
            if client_id is not None:
                extra["client_id"] = client_id
            origin.deliver(error_frame(error.code, error.message, **extra))

    def on_crash(self, error: BaseException) -> None:
        peer, self._link.peer = self._link.peer, None
        if peer is not None:
            peer.close("internal_error", "the conversation failed; resume to continue")

    # -- applying events ------------------------------------------------------------------------

    def _ctx(self) -> domain.Context:
        return self._hub.context(self._conv.service_id)

    async def _apply(self, event: Event) -> None:
        reserved: int | None = None
        if isinstance(event, TransferToOperator | ResumeByOperator):
            # Reserve the target's slot first (no await between check and reserve), so the rules
            # see a transfer that is already known to fit.
            target = event.target_id if isinstance(event, TransferToOperator) else event.operator_id
            if self._reserve(target):
                reserved = target
        try:
            _, effects = domain.handle(self._conv, event, self._hub.clock.now(), self._ctx())
        except Rejected:
            if reserved is not None:
                self._release(reserved)
            raise
        await self._carry_out(effects)
        if (
            isinstance(event, domain.Offer)
            and self._conv.offered_to == event.operator_id
            and self._hub.sessions.get(event.operator_id) is None
        ):
            # The operator left between the pick and the offer.
            await self._apply(domain.OperatorLeft(event.operator_id))

    def _reserve(self, operator_id: int) -> bool:
        """Take a slot of the operator's capacity; False if this conversation already has one
        (then nothing is to be given back if the rules refuse the event)."""
        if (
            operator_id in self._hub.roster
            and self._conv.id in self._hub.roster.get(operator_id).load
        ):
            return False
        session = self._hub.sessions.get(operator_id)
        if session is None:
            raise Rejected("operator_unavailable", f"operator {operator_id} is not connected")
        try:
            self._hub.roster.reserve(operator_id, self._conv.id, self._hub.clock.monotonic())
        except CapacityExceeded:
            raise Rejected(
                "operator_unavailable", f"operator {operator_id} has no free capacity"
            ) from None
        return True

    def _release(self, operator_id: int) -> None:
        if self._hub.roster.release(operator_id, self._conv.id):
            self._hub.poke_groups(operator_id)

    async def _carry_out(self, effects: list[domain.Effect]) -> None:
        conv = self._conv
        write = Write()
        # Each event is encoded once: the stored frame is the delivered frame.
        frames: dict[int, str] = {}
        for effect in effects:
            if isinstance(effect, Emit):
                frame = frames[effect.seq] = self._frame(effect.kind, effect.seq, effect.data)
                write.events.append(
                    StoredEvent(
                        conv.id, effect.seq, effect.kind, effect.audience, frame, effect.client_key
                    )
                )
            elif isinstance(effect, Persist):
                write.conversation = conv
            elif isinstance(effect, SaveSurvey):
                write.conversation = conv
                write.survey = effect.answers
                write.survey_skipped = effect.answers is None
        if write.events or write.conversation is not None:
            await self._hub.store.write(write)
        self._entry.status = conv.status
        self._entry.group_id = conv.group_id
        for effect in effects:
            if isinstance(effect, Emit):
                self._deliver_event(effect, frames[effect.seq])
            elif isinstance(effect, Ack):
                self._deliver_ack(effect)
            elif isinstance(effect, Signal):
                self._deliver_signal(effect)
            elif isinstance(effect, EnterQueue):
                await self._hub.group(effect.group_id).send(Enqueue(self._link))
            elif isinstance(effect, LeaveQueue):
                await self._hub.group(effect.group_id).send(Withdraw(conv.id))
            elif isinstance(effect, Release):
                if effect.rank_last:
                    self._hub.roster.rank_last(effect.operator_id, self._hub.clock.monotonic())
                self._release(effect.operator_id)
            elif isinstance(effect, StartTimer):
                self._start_timer(effect.name, effect.seconds)
            elif isinstance(effect, CancelTimer):
                scope = self._timers.pop(effect.name, None)
                if scope is not None:
                    scope.cancel()
            elif isinstance(effect, ReplayHistory):
                await self._replay_to_operator(effect.operator_id, effect.before)
        if conv.status in domain.TERMINAL_STATUSES:
            self._hub.forget(conv.id)
            self.stop()

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
        # The turn timers: stale ones (the turn passed meanwhile) are ignored by the rules.
        if name == "idle_warning":
            return domain.VisitorIdleWarning()
        if name == "idle_close":
            return domain.VisitorIdleClose()
        if name == "reply":
            return domain.OperatorReplyTimeout(conv.operator_id or 0)
        raise ValueError(f"no timer {name!r} in status {conv.status.value}")

    # -- delivery -------------------------------------------------------------------------------

    def _frame(self, kind: str, seq: int, data: dict[str, Any]) -> str:
        return encode({"type": kind, "conversation_id": self._conv.id, "seq": seq, **data})

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
            session = self._hub.sessions.get(effect.operator_id)
            if session is not None:
                session.deliver_event(self._conv.id, effect.seq, frame)
        if effect.kind == "message":
            self._hub.metrics.messages_relayed += 1

    def _deliver_ack(self, effect: Ack) -> None:
        frame = encode(
            {
                "type": "ack",
                "conversation_id": self._conv.id,
                "client_id": effect.client_id,
                "seq": effect.seq,
            }
        )
        if effect.to == "visitor":
            if self._link.peer is not None:
                self._link.peer.deliver(frame)
        elif self._conv.operator_id is not None:
            session = self._hub.sessions.get(self._conv.operator_id)
            if session is not None:
                session.deliver_event(self._conv.id, effect.seq, frame)

    def _deliver_signal(self, effect: Signal) -> None:
        frame = encode({"type": effect.kind, "conversation_id": self._conv.id, **effect.data})
        if effect.to == "visitor":
            if self._link.peer is not None:
                self._link.peer.deliver(frame)
            return
        operator_id = (
            effect.operator_id if effect.operator_id is not None else self._conv.operator_id
        )
        if operator_id is not None:
            session = self._hub.sessions.get(operator_id)
            if session is not None:
                session.peer.deliver(frame)

    async def _attach(self, peer: Peer, last_seq: int) -> None:
        check_last_seq(self._conv, last_seq)
        previous, self._link.peer = self._link.peer, peer
        if previous is not None and previous is not peer:
            previous.close("superseded", "this conversation was resumed on another connection")
        conv = self._conv
        await replay_to_visitor(self._hub.store, conv, last_seq, peer)
        if conv.status is Status.QUEUED and self._link.position is not None:
            peer.deliver(self._link.position_frame())

    async def _sync(self, message: SyncOperator) -> None:
        if self._conv.operator_id != message.operator_id:
            raise Rejected("not_your_conversation", f"conversation {self._conv.id} is not yours")
        check_last_seq(self._conv, message.last_seq)
        await self._replay_to_operator(
            message.operator_id, self._conv.last_seq + 1, after=message.last_seq
        )

    async def _replay_to_operator(
        self, operator_id: int, before: int, after: int | None = None
    ) -> None:
        """Send the operator's connection the events it lacks below ``before``: after ``after``
        when the client said what it has (sync), else after the last one this connection was
        sent — so an operator who held the conversation before gets only what is new to them."""
        session = self._hub.sessions.get(operator_id)
        if session is None:
            return
        if after is None:
            after = session.delivered.get(self._conv.id, 0)
        for event in await self._hub.store.events_after(self._conv.id, after):
            if event.seq >= before:
                break
            if event.audience != "visitor":
                session.deliver_event(self._conv.id, event.seq, event.frame)
