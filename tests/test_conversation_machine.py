"""Tests for omni.domain.conversation: the conversation state machine (DESIGN §3).

Rules of this module:

* Everything is driven through the public surface: ``open_conversation``, ``handle``,
  ``TRANSITIONS``, ``INTERNAL_EVENTS``, ``Rejected`` and the effect dataclasses.
* Time is a fixed aware instant plus an offset; nothing here reads a clock.
* A rejection is always checked to leave the conversation exactly as it was
  (``dataclasses.asdict`` before and after).
* The property test at the end applies random event sequences and checks the invariants of
  DESIGN §3 after every step.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.domain import protocol as p
from omni.domain.conversation import (
    INTERNAL_EVENTS,
    MAX_TEXT,
    OWNER_EVENTS,
    TERMINAL_STATUSES,
    TRANSITIONS,
    Accept,
    Ack,
    Answered,
    BotAnswer,
    BotTimeout,
    CancelTimer,
    Context,
    Conversation,
    Effect,
    Emit,
    EnterQueue,
    Event,
    GraceExpired,
    LeaveQueue,
    Offer,
    OfferExpired,
    OperatorEnd,
    OperatorLeft,
    OperatorMessage,
    OperatorReplyTimeout,
    OperatorReturned,
    OperatorTyping,
    Persist,
    QueueTimeout,
    Rejected,
    Release,
    ReplayHistory,
    ResumeByOperator,
    SaveSurvey,
    Signal,
    StartTimer,
    Status,
    SupervisorAssign,
    SupervisorTransferToGroup,
    SurveyAnswered,
    SurveyExpired,
    SurveySkipped,
    TransferToGroup,
    TransferToOperator,
    Visitor,
    VisitorAttached,
    VisitorDetached,
    VisitorEnd,
    VisitorGone,
    VisitorIdleClose,
    VisitorIdleWarning,
    VisitorMessage,
    VisitorTyping,
    handle,
    open_conversation,
    restore,
)
from omni.domain.model import GroupLink, Service, SurveyMode, Timers

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
#: When the visitor of every conversation built here began waiting.
WAITING_SINCE = T0

SERVICE = Service(
    id=25,
    name="Web",
    links=(GroupLink(1), GroupLink(2)),
    greeting="Hi {visitor}, {operator} here",
    out_of_hours_message="We are closed.",
    closing_message="Thanks, bye.",
    survey=SurveyMode.DEFAULT,
)
NO_SURVEY = msgspec.structs.replace(SERVICE, survey=SurveyMode.NONE)
GROUP_NAMES = {1: "Support", 2: "Billing"}
CTX = Context(SERVICE, operator_grace=60.0, group_names=GROUP_NAMES)
CTX_NO_SURVEY = Context(NO_SURVEY, operator_grace=60.0, group_names=GROUP_NAMES)
#: A service with every turn deadline (F16): warn after 60 s, close after 180 s, reply in 30 s.
TIMERS = Timers(visitor_idle_warning=60.0, visitor_idle_close=180.0, operator_reply=30.0)
CTX_TIMED = Context(
    msgspec.structs.replace(SERVICE, timers=TIMERS), operator_grace=60.0, group_names=GROUP_NAMES
)
CTX_TIMED_NO_SURVEY = Context(
    msgspec.structs.replace(NO_SURVEY, timers=TIMERS), operator_grace=60.0, group_names=GROUP_NAMES
)

ALL_EVENT_TYPES: tuple[type, ...] = typing.get_args(Event)


def at(seconds: float = 0.0) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- builders -----------------------------------------------------------------------------------


def new(group_id: int | None = 1, service: Service = SERVICE) -> tuple[Conversation, list[Effect]]:
    return open_conversation(
        conversation_id="c1",
        ticket="T-1",
        token_hash="hash",
        service=service,
        visitor=Visitor("Vera"),
        group_id=group_id,
        now=at(0),
    )


def apply(conv: Conversation, event: Event, t: float = 1.0, ctx: Context = CTX) -> list[Effect]:
    same, effects = handle(conv, event, at(t), ctx)
    assert same is conv
    return effects


def reject(conv: Conversation, event: Event, code: str, ctx: Context = CTX) -> Rejected:
    before = dataclasses.asdict(conv)
    with pytest.raises(Rejected) as info:
        handle(conv, event, at(50), ctx)
    assert info.value.code == code
    assert dataclasses.asdict(conv) == before
    return info.value


def queued(ctx: Context = CTX) -> Conversation:
    conv, _ = new(service=ctx.service)
    return conv


def offered(operator_id: int = 1, ctx: Context = CTX) -> Conversation:
    conv = queued(ctx)
    apply(conv, Offer(operator_id), ctx=ctx)
    return conv


def active(operator_id: int = 1, name: str = "Alice", ctx: Context = CTX) -> Conversation:
    conv = offered(operator_id, ctx)
    apply(conv, Accept(operator_id, name), t=2, ctx=ctx)
    return conv


def ended(ctx: Context = CTX) -> Conversation:
    conv = active(ctx=ctx)
    apply(conv, OperatorEnd(1), t=3, ctx=ctx)
    return conv


def closed() -> Conversation:
    conv = ended()
    apply(conv, SurveySkipped(), t=4)
    assert conv.status is Status.CLOSED
    return conv


def abandoned() -> Conversation:
    conv = queued()
    apply(conv, VisitorEnd())
    assert conv.status is Status.ABANDONED
    return conv


def emitted(
    seq: int,
    kind: str,
    audience: str,
    fields: dict[str, Any],
    operator_id: int | None = None,
    client_key: tuple[str, str] | None = None,
    sender: str | None = None,
) -> Emit:
    """The Emit the rules should produce, written as the frame the participants get."""
    frame = msgspec.convert({"type": kind, "conversation_id": "c1", "seq": seq, **fields}, p.Event)
    return Emit(frame, audience, operator_id, client_key, sender)  # type: ignore[arg-type]


def signal(to: str, kind: str, fields: dict[str, Any], operator_id: int | None = None) -> Signal:
    frame = msgspec.convert(
        {"type": kind, "conversation_id": "c1", **fields}, p.Typing | p.Offer | p.OfferWithdrawn
    )
    return Signal(to, frame, operator_id)  # type: ignore[arg-type]


def data(emit: Emit) -> dict[str, Any]:
    """An emitted frame's own fields, as the participants get them."""
    fields: dict[str, Any] = msgspec.json.decode(p.encode(emit.frame))
    for common in ("type", "conversation_id", "seq"):
        fields.pop(common)
    return fields


def emits(effects: list[Effect]) -> list[Emit]:
    return [effect for effect in effects if isinstance(effect, Emit)]


def kinds(effects: list[Effect]) -> list[str]:
    return [effect.kind for effect in emits(effects)]


# --- opening ------------------------------------------------------------------------------------


def test_open_in_hours_queues() -> None:
    conv, effects = new(group_id=1)
    assert conv.status is Status.QUEUED
    assert conv.group_id == 1
    assert conv.last_seq == 0
    assert conv.created_at == T0
    assert conv.waiting_since == WAITING_SINCE
    assert effects == [Persist(), EnterQueue(1)]


def test_open_out_of_hours_tells_the_visitor() -> None:
    conv, effects = new(group_id=None)
    assert conv.status is Status.OUT_OF_HOURS
    assert conv.group_id is None
    assert effects == [
        Persist(),
        emitted(
            1, "out_of_hours", "visitor", {"message": "We are closed.", "opens_at": None}, None
        ),
    ]
    assert conv.last_seq == 1


def test_out_of_hours_says_when_the_service_opens() -> None:
    opens = at(3600)
    _, effects = open_conversation(
        conversation_id="c1",
        ticket="T-1",
        token_hash="hash",
        service=SERVICE,
        visitor=Visitor("Vera"),
        group_id=None,
        now=at(0),
        opens_at=opens,
    )
    [notice] = emits(effects)
    assert notice.frame == p.OutOfHours("c1", 1, "We are closed.", opens)
    # ...as an ISO 8601 UTC time; a notice stored without it (older servers) reads as unknown.
    assert data(notice)["opens_at"] == "2026-11-25T13:00:00Z"
    old = p.decode_event('{"type":"out_of_hours","conversation_id":"c1","seq":1,"message":"x"}')
    assert isinstance(old, p.OutOfHours) and old.opens_at is None


# --- offers and acceptance ----------------------------------------------------------------------


def test_offer_goes_to_that_operator_with_a_timer() -> None:
    conv = queued()
    effects = apply(conv, Offer(2), t=5)
    assert conv.status is Status.OFFERED
    assert conv.offered_to == 2
    assert conv.operator_id is None
    assert effects == [
        Persist(),
        Signal(
            "operator",
            p.Offer(
                "c1",
                p.ConversationSummary(
                    id="c1",
                    ticket="T-1",
                    service_id=25,
                    group_id=1,
                    status=Status.OFFERED,
                    visitor=Visitor("Vera"),
                    created_at=T0,
                    last_seq=0,
                    waited=5.0,
                ),
                30.0,
            ),
            operator_id=2,
        ),
        StartTimer("offer", 30.0),
    ]
    assert conv.last_seq == 0  # an offer is ephemeral: no seq


def test_accept_by_another_operator_is_not_offered() -> None:
    conv = offered(1)
    reject(conv, Accept(2, "Bob"), "not_offered")
    assert conv.status is Status.OFFERED


def test_accept_assigns_replays_and_greets() -> None:
    conv = offered(1)
    effects = apply(conv, Accept(1, "Alice"), t=7)
    assert conv.status is Status.ACTIVE
    assert (conv.operator_id, conv.operator_name, conv.offered_to) == (1, "Alice", None)
    assert CancelTimer("offer") in effects
    assert Persist() in effects
    assert Answered(1) in effects  # taken from group 1's queue: its wait estimate learns
    order = [e for e in effects if isinstance(e, ReplayHistory | Emit)]
    assert order[0] == ReplayHistory(1, before=1)
    assigned, greeting = order[1:]
    assert isinstance(assigned, Emit) and isinstance(greeting, Emit)
    assert (assigned.seq, assigned.kind, assigned.audience, assigned.operator_id) == (
        1,
        "assigned",
        "both",
        1,
    )
    assert data(assigned)["operator"] == {"id": 1, "name": "Alice"}
    assert data(assigned)["avatar"] == {"name": "Web", "image": ""}  # the service is its own avatar
    assert data(assigned)["conversation"]["id"] == "c1"
    assert greeting == emitted(
        2,
        "message",
        "both",
        {
            "id": "c1-2",
            "author": {"kind": "operator", "name": "Alice", "id": 1},
            "text": "Hi Vera, Alice here",
            "at": at(7),
        },
        1,
    )
    assert conv.last_seq == 2


def test_accept_without_greeting_emits_only_assigned() -> None:
    ctx = dataclasses.replace(CTX, service=msgspec.structs.replace(SERVICE, greeting=""))
    conv = offered(1, ctx)
    effects = apply(conv, Accept(1, "Alice"), ctx=ctx)
    assert kinds(effects) == ["assigned"]
    assert conv.last_seq == 1


# --- messages -----------------------------------------------------------------------------------


def test_visitor_message_is_emitted_and_acked() -> None:
    conv = active()
    seq = conv.last_seq + 1
    effects = apply(conv, VisitorMessage("m1", "hello"), t=9)
    assert effects == [
        emitted(
            seq,
            "message",
            "both",
            {
                "id": f"c1-{seq}",
                "author": {"kind": "visitor", "name": "Vera"},
                "text": "hello",
                "at": at(9),
            },
            1,
            ("v", "m1"),
            "visitor",
        ),
        Ack("visitor", "m1", seq),
    ]
    assert conv.last_seq == seq


@pytest.mark.parametrize("build", [queued, offered], ids=["queued", "offered"])
def test_visitor_may_write_while_waiting(build: Any) -> None:
    conv = build()
    effects = apply(conv, VisitorMessage("m1", "anyone?"))
    assert kinds(effects) == ["message"]
    assert effects[-1] == Ack("visitor", "m1", 1)


def test_visitor_may_write_out_of_hours() -> None:
    conv, _ = new(group_id=None)
    effects = apply(conv, VisitorMessage("m1", "call me"))
    assert kinds(effects) == ["message"]
    assert effects[-1] == Ack("visitor", "m1", 2)


def test_resend_of_a_client_id_only_acks_again() -> None:
    conv = active()
    first = apply(conv, VisitorMessage("m1", "hello"))
    seq = conv.last_seq
    again = apply(conv, VisitorMessage("m1", "hello (retry, different text)"), t=20)
    assert again == [Ack("visitor", "m1", seq)]
    assert again[0] == first[-1]
    assert conv.last_seq == seq


def test_resend_is_acked_even_if_the_text_would_now_be_invalid() -> None:
    conv = active()
    apply(conv, VisitorMessage("m1", "hello"))
    seq = conv.last_seq
    assert apply(conv, VisitorMessage("m1", "")) == [Ack("visitor", "m1", seq)]


def test_same_client_id_from_the_operator_is_a_different_message() -> None:
    conv = active()
    apply(conv, VisitorMessage("m1", "hello"))
    visitor_seq = conv.last_seq
    effects = apply(conv, OperatorMessage(1, "m1", "hi there"))
    [emit] = emits(effects)
    assert emit.seq == visitor_seq + 1
    assert emit.client_key == ("o1", "m1")
    assert emit.sender == "operator"
    assert data(emit)["author"] == {"kind": "operator", "name": "Alice", "id": 1}
    assert effects[-1] == Ack("operator", "m1", visitor_seq + 1)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_an_invalid_frame(text: str) -> None:
    conv = active()
    reject(conv, VisitorMessage("m1", text), "invalid_frame")
    reject(conv, OperatorMessage(1, "m1", text), "invalid_frame")


def test_text_longer_than_max_is_refused() -> None:
    conv = active()
    reject(conv, VisitorMessage("m1", "x" * (MAX_TEXT + 1)), "message_too_long")
    reject(conv, OperatorMessage(1, "m1", "x" * (MAX_TEXT + 1)), "message_too_long")
    # exactly MAX_TEXT is fine, and the refused client_id was not burnt
    assert kinds(apply(conv, VisitorMessage("m1", "x" * MAX_TEXT))) == ["message"]


def test_operator_message_from_a_non_owner() -> None:
    conv = active(1)
    reject(conv, OperatorMessage(2, "m1", "hi"), "not_your_conversation")
    reject(conv, OperatorTyping(2), "not_your_conversation")


def test_typing_is_a_signal_without_seq() -> None:
    conv = active()
    seq = conv.last_seq
    assert apply(conv, VisitorTyping()) == [
        signal("operator", "typing", {"author": {"kind": "visitor"}})
    ]
    assert apply(conv, OperatorTyping(1)) == [
        signal("visitor", "typing", {"author": {"kind": "operator", "name": "Alice"}})
    ]
    assert conv.last_seq == seq


# --- offer expiry and disconnects ---------------------------------------------------------------


def test_offer_expired_requeues_keeping_the_place() -> None:
    conv = offered(1)
    effects = apply(conv, OfferExpired(1), t=40)
    assert conv.status is Status.QUEUED
    assert conv.offered_to is None
    assert conv.waiting_since == WAITING_SINCE  # ahead of everyone who came later
    assert effects == [
        signal("operator", "offer_withdrawn", {}, operator_id=1),
        Release(1),
        Persist(),
        EnterQueue(1),
    ]


def test_stale_offer_expired_for_another_operator_is_ignored() -> None:
    conv = offered(1)
    before = dataclasses.asdict(conv)
    assert apply(conv, OfferExpired(2)) == []
    assert dataclasses.asdict(conv) == before


def test_offer_expired_after_accept_is_ignored() -> None:
    conv = active(1)
    before = dataclasses.asdict(conv)
    assert apply(conv, OfferExpired(1)) == []
    assert dataclasses.asdict(conv) == before


def test_operator_left_while_offered_requeues_keeping_the_place() -> None:
    conv = offered(1)
    effects = apply(conv, OperatorLeft(1), t=40)
    assert conv.status is Status.QUEUED
    assert conv.offered_to is None
    assert conv.waiting_since == WAITING_SINCE
    assert effects == [CancelTimer("offer"), Release(1), Persist(), EnterQueue(1)]


def test_operator_left_while_offered_to_someone_else_is_ignored() -> None:
    conv = offered(1)
    before = dataclasses.asdict(conv)
    assert apply(conv, OperatorLeft(2)) == []
    assert dataclasses.asdict(conv) == before


def test_operator_returning_within_grace_keeps_the_conversation() -> None:
    conv = active(1)
    # grace_pending is part of the stored record: each change is persisted
    assert apply(conv, OperatorLeft(1)) == [Persist(), StartTimer("grace", 60.0)]
    assert conv.grace_pending
    assert apply(conv, OperatorLeft(1)) == []  # a second disconnect does not restart the timer
    assert apply(conv, OperatorReturned(1)) == [Persist(), CancelTimer("grace")]
    assert not conv.grace_pending
    before = dataclasses.asdict(conv)
    assert apply(conv, GraceExpired(1)) == []  # the timer fired anyway: too late, ignored
    assert dataclasses.asdict(conv) == before
    assert conv.status is Status.ACTIVE
    assert conv.operator_id == 1


def test_grace_expired_requeues_keeping_the_place() -> None:
    conv = active(1)
    apply(conv, OperatorLeft(1))
    seq = conv.last_seq
    effects = apply(conv, GraceExpired(1), t=70)
    assert conv.status is Status.QUEUED
    assert (conv.operator_id, conv.operator_name, conv.grace_pending) == (None, None, False)
    assert conv.waiting_since == WAITING_SINCE
    assert EnterQueue(1) in effects
    assert Release(1) in effects
    assert Persist() in effects
    [transferred] = emits(effects)
    assert transferred.seq == seq + 1
    assert transferred.kind == "transferred"
    assert transferred.audience == "both"
    assert data(transferred) == {
        "to": {"kind": "group", "id": 1, "name": "Support"},
        "reason": "operator_disconnected",
    }


def test_grace_expired_for_another_operator_is_ignored() -> None:
    conv = active(1)
    apply(conv, OperatorLeft(1))
    before = dataclasses.asdict(conv)
    assert apply(conv, GraceExpired(2)) == []
    assert dataclasses.asdict(conv) == before


# --- transfers ----------------------------------------------------------------------------------


def test_transfer_to_group_requeues_in_the_new_group() -> None:
    conv = active(1)
    seq = conv.last_seq
    effects = apply(conv, TransferToGroup(1, 2, "Billing"))
    assert conv.status is Status.QUEUED
    assert conv.group_id == 2
    assert (conv.operator_id, conv.operator_name) == (None, None)
    [transferred] = emits(effects)
    assert transferred == emitted(
        seq + 1,
        "transferred",
        "both",
        {"to": {"kind": "group", "id": 2, "name": "Billing"}, "reason": "transfer"},
        1,  # the old operator, so that they still receive it
    )
    assert effects.index(transferred) == 0
    assert Release(1) in effects
    assert EnterQueue(2) in effects
    assert Persist() in effects
    assert conv.waiting_since == WAITING_SINCE  # a transferred visitor has already waited


def test_transfer_to_group_by_non_owner() -> None:
    conv = active(1)
    reject(conv, TransferToGroup(2, 2, "Billing"), "not_your_conversation")


def test_transfer_to_self_is_invalid() -> None:
    conv = active(1)
    reject(conv, TransferToOperator(1, 1, "Alice"), "invalid_transfer")


def test_transfer_to_operator_hands_over() -> None:
    conv = active(1)
    seq = conv.last_seq
    effects = apply(conv, TransferToOperator(1, 2, "Bob"))
    assert conv.status is Status.ACTIVE
    assert (conv.operator_id, conv.operator_name) == (2, "Bob")
    assert Release(1) in effects
    order = [e for e in effects if isinstance(e, Emit | ReplayHistory)]
    transferred, replay, assigned = order
    assert isinstance(transferred, Emit) and isinstance(assigned, Emit)
    assert transferred == emitted(
        seq + 1,
        "transferred",
        "both",
        {"to": {"kind": "operator", "id": 2, "name": "Bob"}, "reason": "transfer"},
        1,
    )
    assert replay == ReplayHistory(2, before=seq + 2)
    assert (assigned.seq, assigned.kind, assigned.operator_id) == (seq + 2, "assigned", 2)
    assert data(assigned)["operator"] == {"id": 2, "name": "Bob"}
    assert not any(isinstance(e, Answered) for e in effects)  # nobody left a queue


def test_transfer_to_operator_during_grace_cancels_it() -> None:
    conv = active(1)
    apply(conv, OperatorLeft(1))
    effects = apply(conv, TransferToOperator(1, 2, "Bob"))
    assert CancelTimer("grace") in effects
    assert not conv.grace_pending
    assert apply(conv, GraceExpired(1)) == []


# --- ending -------------------------------------------------------------------------------------


def test_visitor_end_while_queued_abandons() -> None:
    conv = queued()
    effects = apply(conv, VisitorEnd())
    assert conv.status is Status.ABANDONED
    assert conv.ended_by == "visitor"
    assert effects == [
        CancelTimer("queue"),
        LeaveQueue(1),
        Persist(),
        emitted(1, "ended", "visitor", {"by": "visitor"}, None),
        emitted(2, "closed", "visitor", {"message": "Thanks, bye."}, None),
    ]


def test_visitor_end_while_offered_withdraws_the_offer() -> None:
    conv = offered(1)
    effects = apply(conv, VisitorEnd())
    assert conv.status is Status.ABANDONED
    assert conv.offered_to is None
    assert signal("operator", "offer_withdrawn", {}, operator_id=1) in effects
    assert Release(1) in effects
    assert CancelTimer("offer") in effects
    assert not any(isinstance(e, LeaveQueue) for e in effects)
    assert kinds(effects) == ["ended", "closed"]


@pytest.mark.parametrize(("event", "by"), [(VisitorEnd(), "visitor"), (OperatorEnd(1), "operator")])
def test_end_while_active_starts_the_survey(event: Event, by: str) -> None:
    conv = active(1)
    seq = conv.last_seq
    effects = apply(conv, event)
    assert conv.status is Status.ENDED
    assert conv.ended_by == by
    assert Release(1) in effects
    ended_emit, survey = emits(effects)
    assert ended_emit == emitted(seq + 1, "ended", "both", {"by": by}, 1)
    assert (survey.seq, survey.kind, survey.audience) == (seq + 2, "survey", "visitor")
    assert data(survey) == {
        "questions": [
            {
                "id": "rating",
                "kind": "rating",
                "label": "How would you rate this conversation?",
                "required": False,
                "min": 1,
                "max": 5,
            },
            {
                "id": "comment",
                "kind": "text",
                "label": "Anything you would like to tell us?",
                "required": False,
                "max_length": 2000,
            },
        ]
    }
    assert effects[-1] == StartTimer("survey", 600.0)


def test_operator_end_by_non_owner() -> None:
    conv = active(1)
    reject(conv, OperatorEnd(2), "not_your_conversation")


@pytest.mark.parametrize(
    "answers",
    [
        {"rating": 5, "comment": "great"},
        {"rating": 1},
        {"comment": ""},
        {"rating": None},
        {},
    ],
)
def test_survey_answered_closes(answers: dict[str, Any]) -> None:
    conv = ended()
    seq = conv.last_seq
    effects = apply(conv, SurveyAnswered(answers))
    assert conv.status is Status.CLOSED
    expected = {key: value for key, value in answers.items() if value is not None}
    assert effects == [
        CancelTimer("survey"),
        SaveSurvey(expected),
        Persist(),
        emitted(seq + 1, "closed", "both", {"message": "Thanks, bye."}, 1),
    ]


@pytest.mark.parametrize(
    "answers",
    [
        {"rating": 0},
        {"rating": 6},
        {"rating": "5"},
        {"rating": True},
        {"rating": 4.0},
        {"mood": "happy"},
        {"rating": 5, "mood": "happy"},
        {"comment": "x" * 2001},
        {"comment": 5},
    ],
    ids=repr,
)
def test_invalid_survey_answers_change_nothing(answers: dict[str, Any]) -> None:
    conv = ended()
    reject(conv, SurveyAnswered(answers), "invalid_survey")
    assert conv.status is Status.ENDED


def test_survey_skipped_closes_without_answers_for_good() -> None:
    conv = ended()
    assert conv.survey == "pending"
    effects = apply(conv, SurveySkipped())
    assert conv.status is Status.CLOSED
    assert SaveSurvey(None) in effects
    assert CancelTimer("survey") in effects
    assert kinds(effects) == ["closed"]
    assert conv.survey == "skipped"


def test_a_survey_that_times_out_closes_the_conversation_but_stays_pending() -> None:
    """The page's survey waited long enough; its answer may still come by link."""
    conv = ended()
    effects = apply(conv, SurveyExpired())
    assert conv.status is Status.CLOSED
    assert not any(isinstance(e, SaveSurvey) for e in effects)
    assert CancelTimer("survey") in effects and Persist() in effects
    assert kinds(effects) == ["closed"]
    assert conv.survey == "pending"


def test_end_without_survey_closes_at_once() -> None:
    conv = active(1, ctx=CTX_NO_SURVEY)
    seq = conv.last_seq
    effects = apply(conv, OperatorEnd(1), ctx=CTX_NO_SURVEY)
    assert conv.status is Status.CLOSED
    assert Release(1) in effects
    assert emits(effects) == [
        emitted(seq + 1, "ended", "both", {"by": "operator"}, 1),
        emitted(seq + 2, "closed", "both", {"message": "Thanks, bye."}, 1),
    ]
    assert not any(isinstance(e, StartTimer) for e in effects)
    assert not any(isinstance(e, SaveSurvey) for e in effects)


# --- turn deadlines (F16): visitor idle warning and close, operator reply ----------------------

TURN_CANCELS = [CancelTimer("idle_warning"), CancelTimer("idle_close"), CancelTimer("reply")]


def test_a_greeting_gives_the_visitor_the_turn() -> None:
    conv = offered(1, ctx=CTX_TIMED)
    effects = apply(conv, Accept(1, "Alice"), ctx=CTX_TIMED)
    assert kinds(effects) == ["assigned", "message"]
    assert effects[-3:] == [
        StartTimer("idle_warning", 60.0),
        StartTimer("idle_close", 180.0),
        CancelTimer("reply"),
    ]
    assert conv.turn == "visitor"


def test_without_a_greeting_the_operator_owes_the_first_words() -> None:
    ctx = dataclasses.replace(
        CTX_TIMED, service=msgspec.structs.replace(CTX_TIMED.service, greeting="")
    )
    conv = offered(1, ctx=ctx)
    effects = apply(conv, Accept(1, "Alice"), ctx=ctx)
    assert effects[-3:] == [
        CancelTimer("idle_warning"),
        CancelTimer("idle_close"),
        StartTimer("reply", 30.0),
    ]
    assert conv.turn == "operator"


def test_messages_pass_the_turn_and_the_reply_deadline_counts_from_the_first() -> None:
    conv = active(ctx=CTX_TIMED)
    effects = apply(conv, VisitorMessage("m1", "hello"), t=10, ctx=CTX_TIMED)
    assert kinds(effects) == ["message"] and isinstance(effects[1], Ack)
    assert effects[2:] == [
        CancelTimer("idle_warning"),
        CancelTimer("idle_close"),
        StartTimer("reply", 30.0),
    ]
    # A second message before the reply: the deadline keeps counting from the first one.
    effects = apply(conv, VisitorMessage("m2", "anyone?"), t=20, ctx=CTX_TIMED)
    assert len(effects) == 2 and kinds(effects) == ["message"]
    assert conv.turn == "operator"
    effects = apply(conv, OperatorMessage(1, "a1", "here"), t=25, ctx=CTX_TIMED)
    assert effects[2:] == [
        StartTimer("idle_warning", 60.0),
        StartTimer("idle_close", 180.0),
        CancelTimer("reply"),
    ]
    assert conv.turn == "visitor"
    # The operator writing again restarts the visitor's idle deadlines.
    effects = apply(conv, OperatorMessage(1, "a2", "still there?"), t=40, ctx=CTX_TIMED)
    assert effects[2:4] == [StartTimer("idle_warning", 60.0), StartTimer("idle_close", 180.0)]


def test_without_turn_deadlines_messages_start_no_timer() -> None:
    conv = active()
    effects = apply(conv, VisitorMessage("m1", "hello"))
    assert not [e for e in effects if isinstance(e, StartTimer | CancelTimer)]
    assert conv.turn == "operator"


def test_an_idle_visitor_is_warned_then_the_conversation_ends() -> None:
    conv = active(ctx=CTX_TIMED)
    last = conv.last_seq
    effects = apply(conv, VisitorIdleWarning(), t=62, ctx=CTX_TIMED)
    assert effects == [emitted(last + 1, "idle_warning", "both", {"closes_in": 120.0}, 1)]
    assert conv.status is Status.ACTIVE and conv.turn == "visitor"
    effects = apply(conv, VisitorIdleClose(), t=182, ctx=CTX_TIMED)
    assert effects[:5] == [CancelTimer("grace"), *TURN_CANCELS, Release(1)]
    ended_ = [e for e in emits(effects) if e.kind == "ended"]
    assert [data(e) for e in ended_] == [{"by": "visitor_idle"}]
    assert kinds(effects) == ["ended", "survey"]
    assert conv.status is Status.ENDED and conv.ended_by == "visitor_idle"
    assert conv.ended_at == at(182) and conv.turn is None


def test_only_a_warning_or_only_a_close() -> None:
    only_warning = dataclasses.replace(
        CTX_TIMED,
        service=msgspec.structs.replace(SERVICE, timers=Timers(visitor_idle_warning=60.0)),
    )
    conv = active(ctx=only_warning)
    effects = apply(conv, VisitorIdleWarning(), ctx=only_warning)
    assert [data(e) for e in emits(effects)] == [{"closes_in": None}]
    assert apply(conv, VisitorIdleClose(), ctx=only_warning) == []  # not set: never closes
    assert conv.status is Status.ACTIVE


def test_late_turn_timers_are_ignored() -> None:
    conv = active(ctx=CTX_TIMED)
    apply(conv, VisitorMessage("m1", "hello"), ctx=CTX_TIMED)  # the visitor answered
    for event in (VisitorIdleWarning(), VisitorIdleClose()):
        assert apply(conv, event, ctx=CTX_TIMED) == []
    apply(conv, OperatorMessage(1, "a1", "here"), ctx=CTX_TIMED)  # the operator replied
    assert apply(conv, OperatorReplyTimeout(1), ctx=CTX_TIMED) == []
    # Deadlines a service no longer sets (changed live) do nothing when they fire.
    apply(conv, VisitorMessage("m2", "ok"), ctx=CTX_TIMED)
    assert apply(conv, OperatorReplyTimeout(1), ctx=CTX) == []
    assert conv.status is Status.ACTIVE and conv.operator_id == 1


def test_a_missed_reply_sends_the_conversation_back_to_the_queue() -> None:
    conv = active(ctx=CTX_TIMED)
    apply(conv, VisitorMessage("m1", "hello"), t=10, ctx=CTX_TIMED)
    assert apply(conv, OperatorReplyTimeout(2), ctx=CTX_TIMED) == []  # not theirs
    seq = conv.last_seq + 1
    effects = apply(conv, OperatorReplyTimeout(1), t=40, ctx=CTX_TIMED)
    transferred = {
        "to": {"kind": "group", "id": 1, "name": "Support"},
        "reason": "operator_reply_timeout",
    }
    assert effects == [
        # emitted while the operator still holds it, so they are told
        emitted(seq, "transferred", "both", transferred, 1),
        CancelTimer("grace"),
        *TURN_CANCELS,
        Release(1, rank_last=True),
        Persist(),
        EnterQueue(1),
    ]
    assert conv.status is Status.QUEUED and conv.operator_id is None and conv.turn is None
    assert conv.waiting_since == WAITING_SINCE  # back at its original place


def test_a_transfer_to_an_operator_gives_a_fresh_reply_deadline() -> None:
    conv = active(ctx=CTX_TIMED)
    apply(conv, VisitorMessage("m1", "hello"), ctx=CTX_TIMED)
    effects = apply(conv, TransferToOperator(1, 2, "Bob"), ctx=CTX_TIMED)
    assert effects[-1] == StartTimer("reply", 30.0)
    assert conv.turn == "operator"
    # A late deadline of the first operator is ignored; the new one's applies.
    assert apply(conv, OperatorReplyTimeout(1), ctx=CTX_TIMED) == []
    assert kinds(apply(conv, OperatorReplyTimeout(2), ctx=CTX_TIMED)) == ["transferred"]


@pytest.mark.parametrize(
    "event",
    [OperatorEnd(1), VisitorEnd(), TransferToGroup(1, 2, "Billing")],
    ids=repr,
)
def test_leaving_active_cancels_the_turn_deadlines(event: Event) -> None:
    conv = active(ctx=CTX_TIMED)
    effects = apply(conv, event, ctx=CTX_TIMED)
    assert all(c in effects for c in TURN_CANCELS)
    assert conv.turn is None


def test_a_disconnected_operator_loses_the_conversation_at_the_earlier_deadline() -> None:
    conv = active(ctx=CTX_TIMED)
    apply(conv, VisitorMessage("m1", "hello"), ctx=CTX_TIMED)
    apply(conv, OperatorLeft(1), ctx=CTX_TIMED)  # grace: 60 s; reply deadline: 30 s
    assert kinds(apply(conv, OperatorReplyTimeout(1), ctx=CTX_TIMED)) == ["transferred"]
    assert conv.status is Status.QUEUED and not conv.grace_pending
    assert apply(conv, GraceExpired(1), ctx=CTX_TIMED) == []


# --- a supervisor's transfer and assignment (the live view) ------------------------------------


def test_a_supervisor_assigns_a_queued_conversation_as_an_accepted_offer() -> None:
    conv = queued()
    effects = apply(conv, SupervisorAssign(3, "Carla"), t=5)
    assert conv.status is Status.ACTIVE and conv.operator_id == 3 and conv.answered_at == at(5)
    assert LeaveQueue(1) in effects and Answered(1) in effects
    assert kinds(effects) == ["assigned", "message"]  # as after an accept: the greeting


def test_a_supervisor_assigns_an_offered_conversation_to_someone_else() -> None:
    conv = offered(1)
    effects = apply(conv, SupervisorAssign(3, "Carla"))
    assert signal("operator", "offer_withdrawn", {}, operator_id=1) in effects
    assert Release(1) in effects and CancelTimer("offer") in effects
    assert conv.status is Status.ACTIVE and conv.operator_id == 3 and conv.offered_to is None


def test_a_supervisor_assigns_an_offered_conversation_to_its_operator() -> None:
    conv = offered(1)
    effects = apply(conv, SupervisorAssign(1, "Alice"))
    assert Release(1) not in effects  # the offer's slot is the one it keeps
    assert conv.status is Status.ACTIVE and conv.operator_id == 1


def test_a_supervisor_transfers_a_waiting_conversation_to_a_group_keeping_its_place() -> None:
    conv = queued()
    effects = apply(conv, SupervisorTransferToGroup(2, "Billing"))
    assert kinds(effects) == ["transferred"]
    assert LeaveQueue(1) in effects and effects[-1] == EnterQueue(2)
    assert conv.status is Status.QUEUED and conv.group_id == 2
    assert conv.waiting_since == WAITING_SINCE
    reject(conv, SupervisorTransferToGroup(2, "Billing"), "invalid_transfer")


def test_a_supervisor_moves_a_stuck_active_conversation() -> None:
    conv = active(1)
    apply(conv, OperatorLeft(1))  # the grace period runs: stuck
    effects = apply(conv, SupervisorAssign(3, "Carla", transfer=True))
    assert kinds(effects) == ["transferred", "assigned"]
    assert Release(1) in effects and CancelTimer("grace") in effects
    assert conv.operator_id == 3 and not conv.grace_pending
    effects = apply(conv, SupervisorTransferToGroup(2, "Billing"))
    assert Release(3) in effects and effects[-1] == EnterQueue(2)
    assert conv.status is Status.QUEUED and conv.operator_id is None


def test_a_supervisor_assigns_only_waiting_conversations() -> None:
    conv = active(1)
    reject(conv, SupervisorAssign(3, "Carla"), "invalid_state")
    reject(conv, SupervisorAssign(1, "Alice", transfer=True), "invalid_transfer")
    reject(ended(), SupervisorAssign(3, "Carla"), "invalid_state")


# --- nothing after the end ----------------------------------------------------------------------


def sample_event(kind: type, operator_id: int) -> Event:
    """One event of each type, from ``operator_id`` where an operator is involved."""
    samples: dict[type, Event] = {
        VisitorMessage: VisitorMessage("late", "hello?"),
        BotAnswer: BotAnswer("late", option="sales"),
        BotTimeout: BotTimeout(),
        OperatorMessage: OperatorMessage(operator_id, "late", "hello?"),
        VisitorTyping: VisitorTyping(),
        OperatorTyping: OperatorTyping(operator_id),
        Offer: Offer(operator_id),
        OfferExpired: OfferExpired(operator_id),
        Accept: Accept(operator_id, "Alice"),
        TransferToGroup: TransferToGroup(operator_id, 2, "Billing"),
        TransferToOperator: TransferToOperator(operator_id, operator_id + 1, "Bob"),
        OperatorLeft: OperatorLeft(operator_id),
        OperatorReturned: OperatorReturned(operator_id),
        GraceExpired: GraceExpired(operator_id),
        VisitorEnd: VisitorEnd(),
        OperatorEnd: OperatorEnd(operator_id),
        SurveyAnswered: SurveyAnswered({"rating": 5}),
        SurveySkipped: SurveySkipped(),
        SurveyExpired: SurveyExpired(),
        ResumeByOperator: ResumeByOperator(operator_id, "Alice", 1),
        QueueTimeout: QueueTimeout(),
        VisitorDetached: VisitorDetached(),
        VisitorAttached: VisitorAttached(),
        VisitorGone: VisitorGone(),
        VisitorIdleWarning: VisitorIdleWarning(),
        VisitorIdleClose: VisitorIdleClose(),
        OperatorReplyTimeout: OperatorReplyTimeout(operator_id),
        SupervisorTransferToGroup: SupervisorTransferToGroup(2, "Billing"),
        SupervisorAssign: SupervisorAssign(operator_id, "Alice", transfer=True),
    }
    assert set(samples) == set(ALL_EVENT_TYPES)
    return samples[kind]


@pytest.mark.parametrize("kind", ALL_EVENT_TYPES, ids=lambda k: k.__name__)
@pytest.mark.parametrize("build", [closed, abandoned], ids=["closed", "abandoned"])
def test_nothing_is_accepted_after_the_end(build: Any, kind: type) -> None:
    conv = build()
    assert conv.status in TERMINAL_STATUSES
    # The conversation's last operator where there is one: owner events are checked for the
    # owner before the status, and the point here is the status.
    operator_id = conv.operator_id if conv.operator_id is not None else 1
    event = sample_event(kind, operator_id)
    before = dataclasses.asdict(conv)
    if kind is Offer:
        # routing raced with the end: the slot reserved for the offer is given back
        assert apply(conv, event) == [Release(operator_id)]
    elif kind in INTERNAL_EVENTS:
        assert apply(conv, event) == []
    elif kind in OWNER_EVENTS and conv.operator_id is None:
        # nobody holds an abandoned conversation: the ownership check answers first
        reject(conv, event, "not_your_conversation")
    else:
        reject(conv, event, "invalid_state")
    assert dataclasses.asdict(conv) == before


def test_visitor_cannot_end_twice() -> None:
    conv = ended()
    reject(conv, VisitorEnd(), "invalid_state")
    reject(conv, OperatorEnd(1), "invalid_state")
    reject(conv, VisitorMessage("m9", "still there?"), "invalid_state")


def test_survey_answer_while_active_is_invalid_state() -> None:
    conv = active()
    reject(conv, SurveyAnswered({"rating": 5}), "invalid_state")
    reject(conv, SurveySkipped(), "invalid_state")


# --- out of hours -------------------------------------------------------------------------------


def test_resume_by_operator_out_of_hours() -> None:
    conv, _ = new(group_id=None)
    apply(conv, VisitorMessage("m1", "call me back"))
    effects = apply(conv, ResumeByOperator(3, "Carol", 2))
    assert conv.status is Status.ACTIVE
    assert (conv.operator_id, conv.operator_name, conv.group_id) == (3, "Carol", 2)
    assert effects[:2] == [Persist(), ReplayHistory(3, before=3)]
    assert not any(isinstance(e, Answered) for e in effects)  # nobody left a queue
    [assigned] = emits(effects)
    assert (assigned.seq, assigned.kind, assigned.operator_id) == (3, "assigned", 3)
    assert data(assigned)["operator"] == {"id": 3, "name": "Carol"}
    # and the conversation then works like any other
    assert kinds(apply(conv, OperatorMessage(3, "o1", "hello Vera"))) == ["message"]


def test_resume_by_operator_only_out_of_hours() -> None:
    reject(active(1), ResumeByOperator(2, "Bob", 1), "invalid_state")
    reject(queued(), ResumeByOperator(2, "Bob", 1), "invalid_state")


def test_resumed_out_of_hours_conversation_requeues_when_grace_expires() -> None:
    """An out-of-hours conversation starts without a group; resuming it gives it the group
    named by the caller, so that when the operator disconnects and the grace period runs out
    it can be requeued (it used to crash on ``assert conv.group_id is not None``)."""
    conv, _ = new(group_id=None)
    apply(conv, ResumeByOperator(3, "Carol", 2))
    assert apply(conv, OperatorLeft(3)) == [Persist(), StartTimer("grace", 60.0)]
    effects = apply(conv, GraceExpired(3))
    assert conv.status is Status.QUEUED
    assert (conv.group_id, conv.operator_id) == (2, None)
    assert EnterQueue(2) in effects
    assert Release(3) in effects
    [transferred] = emits(effects)
    assert data(transferred) == {
        "to": {"kind": "group", "id": 2, "name": "Billing"},
        "reason": "operator_disconnected",
    }


# --- restore after a restart ----------------------------------------------------------------------


def test_restore_requeues_a_pending_offer() -> None:
    conv = offered(1)
    assert restore(conv, operator_connected=True, ctx=CTX) == [
        Persist(),
        signal("operator", "offer_withdrawn", {}, operator_id=1),
        Release(1),
        EnterQueue(1),
        StartTimer("absent", 300.0),
    ]
    assert (conv.status, conv.offered_to) == (Status.QUEUED, None)
    assert conv.waiting_since == WAITING_SINCE


def test_restore_puts_a_queued_conversation_back_in_its_queue() -> None:
    conv = queued()
    assert restore(conv, operator_connected=False, ctx=CTX) == [
        EnterQueue(1),
        StartTimer("absent", 300.0),
    ]
    assert conv.status is Status.QUEUED


def test_restore_keeps_the_queue_timeout_counting_from_when_the_visitor_began_waiting() -> None:
    ctx = dataclasses.replace(
        CTX,
        service=msgspec.structs.replace(
            SERVICE, timers=msgspec.structs.replace(SERVICE.timers, queue_timeout=120)
        ),
    )
    conv = queued(ctx)
    later = WAITING_SINCE + timedelta(seconds=50)
    effects = restore(conv, operator_connected=False, ctx=ctx, now=later)
    assert StartTimer("queue", 70.0) in effects


# --- a visitor who is gone ----------------------------------------------------------------------


@pytest.mark.parametrize("build", [queued, offered], ids=["queued", "offered"])
def test_a_waiting_visitor_who_leaves_is_abandoned_after_the_absence_timeout(build: Any) -> None:
    conv = build()
    assert apply(conv, VisitorDetached()) == [StartTimer("absent", 300.0)]
    effects = apply(conv, VisitorGone())
    assert conv.status is Status.ABANDONED and conv.ended_by == "visitor_gone"
    assert Persist() in effects and kinds(effects) == ["ended", "closed"]


def test_a_visitor_who_comes_back_stops_the_absence_timer() -> None:
    conv = queued()
    apply(conv, VisitorDetached())
    assert apply(conv, VisitorAttached()) == [CancelTimer("absent")]


def test_absence_means_nothing_once_an_operator_holds_the_conversation() -> None:
    conv = active(1)
    assert apply(conv, VisitorDetached()) == []
    assert apply(conv, VisitorGone()) == []
    assert conv.status is Status.ACTIVE


def test_an_out_of_hours_conversation_takes_a_bounded_number_of_visitor_messages() -> None:
    ctx = dataclasses.replace(CTX, out_of_hours_messages=3)
    conv, _ = new(group_id=None)
    for n in range(3):
        apply(conv, VisitorMessage(f"m{n}", "hello?"), ctx=ctx)
    with pytest.raises(Rejected) as refused:
        apply(conv, VisitorMessage("m3", "anyone?"), ctx=ctx)
    assert refused.value.code == "message_limit"
    assert conv.last_seq == 4  # out_of_hours and three messages: nothing more was stored
    # A resend of a stored message is still acknowledged.
    assert apply(conv, VisitorMessage("m1", "hello?"), ctx=ctx) == [Ack("visitor", "m1", 3)]


def test_restore_starts_grace_when_the_operator_is_away() -> None:
    conv = active(1)
    assert restore(conv, operator_connected=False, ctx=CTX) == [
        Persist(),
        StartTimer("grace", 60.0),
    ]
    assert conv.grace_pending
    assert kinds(apply(conv, GraceExpired(1))) == ["transferred"]
    assert conv.status is Status.QUEUED


def test_restore_leaves_a_connected_operator_alone() -> None:
    conv = active(1)
    before = dataclasses.asdict(conv)
    assert restore(conv, operator_connected=True, ctx=CTX) == []
    assert dataclasses.asdict(conv) == before


def test_restore_waits_again_for_the_survey() -> None:
    conv = ended()
    assert restore(conv, operator_connected=False, ctx=CTX) == [StartTimer("survey", 600.0)]


@pytest.mark.parametrize("build", [closed, abandoned], ids=["closed", "abandoned"])
def test_restore_does_nothing_after_the_end(build: Any) -> None:
    conv = build()
    before = dataclasses.asdict(conv)
    assert restore(conv, operator_connected=False, ctx=CTX) == []
    assert dataclasses.asdict(conv) == before


# --- the table ----------------------------------------------------------------------------------


def test_transitions_cover_every_event_and_status() -> None:
    assert set(TRANSITIONS) == set(ALL_EVENT_TYPES)
    assert set(INTERNAL_EVENTS) <= set(TRANSITIONS)
    mentioned = {s for allowed in TRANSITIONS.values() for pair in allowed.items() for s in pair}
    assert mentioned == set(Status)


def test_every_status_is_reachable_from_the_start() -> None:
    # What a conversation opens in (the bot then leads on to queued, out_of_hours or closed:
    # tests/test_bot.py).
    reached = {Status.BOT, Status.QUEUED, Status.OUT_OF_HOURS}
    frontier = list(reached)
    while frontier:
        status = frontier.pop()
        for allowed in TRANSITIONS.values():
            target = allowed.get(status)
            if target is not None and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(Status)


def test_terminal_statuses_have_no_way_out() -> None:
    assert {Status.CLOSED, Status.ABANDONED} == TERMINAL_STATUSES
    for kind, allowed in TRANSITIONS.items():
        assert not TERMINAL_STATUSES & set(allowed), f"{kind.__name__} leaves a terminal status"


def test_every_non_terminal_status_can_end() -> None:
    """From every open status some path leads to a terminal status."""
    can_end = set(TERMINAL_STATUSES)
    changed = True
    while changed:
        changed = False
        for allowed in TRANSITIONS.values():
            for source, target in allowed.items():
                if target in can_end and source not in can_end:
                    can_end.add(source)
                    changed = True
    assert can_end == set(Status)


# --- properties ---------------------------------------------------------------------------------

OPERATORS = st.integers(min_value=1, max_value=3)
CLIENT_IDS = st.sampled_from(["a", "b", "c"])
TEXTS = st.one_of(
    st.sampled_from(["hello", "ok", "", "  ", "x" * (MAX_TEXT + 1)]),
    st.text(max_size=12),
)
VALID_ANSWERS = st.fixed_dictionaries(
    {},
    optional={
        "rating": st.one_of(st.none(), st.integers(min_value=1, max_value=5)),
        "comment": st.text(max_size=20),
    },
)
INVALID_ANSWERS = st.sampled_from(
    [
        {"rating": 0},
        {"rating": 6},
        {"rating": "5"},
        {"rating": True},
        {"mood": 3},
        {"comment": "x" * 2001},
    ]
)


def _name(operator_id: int) -> str:
    return f"Op{operator_id}"


def events(operators: st.SearchStrategy[int]) -> st.SearchStrategy[Event]:
    """Any event, its operator ids drawn from ``operators``."""
    return st.one_of(
        st.builds(VisitorMessage, CLIENT_IDS, TEXTS),
        st.builds(OperatorMessage, operators, CLIENT_IDS, TEXTS),
        st.just(VisitorTyping()),
        st.builds(OperatorTyping, operators),
        st.builds(Offer, operators),
        st.builds(OfferExpired, operators),
        operators.map(lambda op: Accept(op, _name(op))),
        st.builds(
            lambda op, group: TransferToGroup(op, group, GROUP_NAMES[group]),
            operators,
            st.sampled_from([1, 2]),
        ),
        st.builds(
            lambda op, target: TransferToOperator(op, target, _name(target)),
            operators,
            operators,
        ),
        st.builds(OperatorLeft, operators),
        st.builds(OperatorReturned, operators),
        st.builds(GraceExpired, operators),
        st.just(VisitorEnd()),
        st.builds(OperatorEnd, operators),
        st.builds(SurveyAnswered, st.one_of(VALID_ANSWERS, INVALID_ANSWERS)),
        st.just(SurveySkipped()),
        st.just(SurveyExpired()),
        st.builds(
            lambda op, group: ResumeByOperator(op, _name(op), group),
            operators,
            st.sampled_from([1, 2]),
        ),
        st.just(VisitorIdleWarning()),
        st.just(VisitorIdleClose()),
        st.builds(OperatorReplyTimeout, operators),
        st.just(VisitorDetached()),
        st.just(VisitorAttached()),
        st.just(VisitorGone()),
    )


def next_event(conv: Conversation) -> st.SearchStrategy[Event]:
    """Any event, with operator ids from 1..3 but leaning towards the operator the conversation
    is offered to or held by, so that runs get past offers into transfers, disconnects and
    surveys instead of being mostly rejected."""
    return _events_involving(
        tuple(op for op in (conv.operator_id, conv.offered_to) if op is not None)
    )


@functools.cache
def _events_involving(involved: tuple[int, ...]) -> st.SearchStrategy[Event]:
    # Cached: building the strategy anew for every step would dominate the run time.
    operators = st.one_of(st.sampled_from(involved), OPERATORS) if involved else OPERATORS
    return events(operators)


#: Statuses a conversation may ever be in: where it starts, and every target of the table.
REACHABLE = {Status.QUEUED, Status.OUT_OF_HOURS} | {
    target for allowed in TRANSITIONS.values() for target in allowed.values()
}


def _message_key(event: Event) -> tuple[str, str] | None:
    if isinstance(event, VisitorMessage):
        return ("v", event.client_id)
    if isinstance(event, OperatorMessage):
        return (f"o{event.operator_id}", event.client_id)
    return None


class Run:
    """The history of one generated run, and the invariants checked after every step."""

    def __init__(self, conv: Conversation, effects: list[Effect], ctx: Context) -> None:
        self.conv = conv
        self.ctx = ctx
        self.emits: list[Emit] = []
        self.used_keys: dict[tuple[str, str], int] = {}
        self.terminal = False
        #: Timers started and not cancelled since (a model of the actor's timers).
        self.running: set[str] = set()
        self.record(effects)
        self.check()

    def record(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, StartTimer):
                self.running.add(effect.name)
            elif isinstance(effect, CancelTimer):
                self.running.discard(effect.name)
            if isinstance(effect, Emit):
                self.emits.append(effect)
                if effect.client_key is not None:
                    assert effect.kind == "message"
                    assert effect.client_key not in self.used_keys
                    self.used_keys[effect.client_key] = effect.seq

    def step(self, event: Event, now: datetime) -> None:
        conv = self.conv
        before = dataclasses.asdict(conv)
        previous = conv.status
        key = _message_key(event)
        seen = self.used_keys.get(key) if key is not None else None
        try:
            same, effects = handle(conv, event, now, self.ctx)
        except Rejected:
            assert dataclasses.asdict(conv) == before, f"{event!r} was rejected but changed state"
            effects = None
        else:
            assert same is conv
        if effects is not None:
            if self.terminal:
                assert not emits(effects), f"{event!r} emitted after {previous.value}"
                assert dataclasses.asdict(conv) == before
            if seen is not None:
                assert key is not None
                party = "visitor" if key[0] == "v" else "operator"
                assert effects == [Ack(party, key[1], seen)], f"resend of {key} made {effects}"
            self.check_transition(event, previous)
            self.check_acks(event, effects)
            self.record(effects)
        if conv.status in TERMINAL_STATUSES:
            self.terminal = True
        self.check()

    def check_transition(self, event: Event, previous: Status) -> None:
        status = self.conv.status
        if status is previous:
            return
        target = TRANSITIONS[type(event)].get(previous)
        assert target is not None, f"{event!r} moved {previous.value} -> {status.value}"
        if target is Status.ENDED and not self.ctx.service.questions():
            assert status is Status.CLOSED
        else:
            assert status is target, f"{event!r}: {previous.value} -> {status.value}"

    def check_acks(self, event: Event, effects: list[Effect]) -> None:
        by_seq = {emit.seq: emit for emit in [*self.emits, *emits(effects)]}
        for ack in (e for e in effects if isinstance(e, Ack)):
            emit = by_seq.get(ack.seq)
            assert emit is not None, f"{ack} refers to no emitted event"
            assert emit.kind == "message"
            assert emit.client_key == _message_key(event)
            assert emit.client_key is not None and emit.client_key[1] == ack.client_id
            assert emit.sender == ack.to

    def check(self) -> None:
        conv = self.conv
        seqs = [emit.seq for emit in self.emits]
        assert seqs == list(range(1, conv.last_seq + 1)), f"seqs {seqs}, last {conv.last_seq}"
        assert conv.client_ids == self.used_keys
        assert conv.status in REACHABLE
        # a visitor keeps their place in any queue through offers, disconnects and transfers
        assert conv.waiting_since == WAITING_SINCE
        if conv.status in {Status.QUEUED, Status.OFFERED, Status.ACTIVE}:
            assert conv.group_id is not None, "nowhere to requeue it"
        if conv.status is Status.ACTIVE:
            assert conv.operator_id is not None
            assert conv.operator_name is not None
            assert conv.offered_to is None
        if conv.status is Status.QUEUED:
            assert conv.offered_to is None
            assert conv.operator_id is None
            assert conv.group_id is not None
        if conv.status is Status.OFFERED:
            assert conv.offered_to is not None
            assert conv.operator_id is None
        if conv.status is not Status.ACTIVE:
            assert not conv.grace_pending
            # no deadline of an active conversation outlives it
            assert conv.turn is None
            assert not self.running & {"idle_warning", "idle_close", "reply"}, self.running
        if conv.turn == "visitor":
            assert "reply" not in self.running
        if conv.turn == "operator":
            assert not self.running & {"idle_warning", "idle_close"}


@settings(max_examples=300, deadline=None)
@given(
    in_hours=st.booleans(),
    with_survey=st.booleans(),
    with_timers=st.booleans(),
    steps=st.integers(min_value=0, max_value=40),
    data=st.data(),
)
def test_random_event_sequences_keep_the_invariants(
    in_hours: bool, with_survey: bool, with_timers: bool, steps: int, data: st.DataObject
) -> None:
    contexts = {
        (True, False): CTX,
        (False, False): CTX_NO_SURVEY,
        (True, True): CTX_TIMED,
        (False, True): CTX_TIMED_NO_SURVEY,
    }
    ctx = contexts[(with_survey, with_timers)]
    conv, effects = new(group_id=1 if in_hours else None, service=ctx.service)
    run = Run(conv, effects, ctx)
    for i in range(1, steps + 1):
        run.step(data.draw(next_event(conv), label=f"event {i}"), at(i))
