"""Outgoing webhooks' events: which effects of a conversation's step make which events, and the
JSON each event is sent as (docs/admin-api.md, "Webhooks").

Rules of this module:

* An event is made by the effects of one step, in their order: ``started`` by the creation's
  ``started`` signal, ``queued`` by every entry into a group's queue, ``assigned``,
  ``transferred``, ``message``, ``ended`` and ``closed`` by the stored event of that name,
  ``survey_answered`` by the saved answers (a skipped or expired survey makes none). The
  chatbot's lines and the visitor's answers to it are not chat messages and make none. A
  conversation put back into routing after a restart makes none: nothing happened to it.
* The body follows the Standard Webhooks convention: ``{"type", "timestamp", "data"}``. ``data``
  holds the conversation as the API shows it (after the step) and, for an event that is a
  stored event of the conversation, that event exactly as it is stored, delivered and replayed
  (the frame of docs/protocol.md, with its ``seq``) — embedded as it was encoded, not encoded
  again.
* Only the events somebody subscribed to are built, each body once, whatever the number of
  subscriptions that want it.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from omni.domain import protocol as p
from omni.domain.conversation import (
    Conversation,
    Effect,
    Emit,
    EnterQueue,
    SaveSurvey,
    Signal,
)

#: The stored events that are webhook events, by their frame's type.
_EMITTED: dict[type, str] = {
    p.Message: "conversation.message",
    p.Assigned: "conversation.assigned",
    p.Transferred: "conversation.transferred",
    p.Ended: "conversation.ended",
    p.Closed: "conversation.closed",
}


class EventData(msgspec.Struct, frozen=True, omit_defaults=True):
    #: The conversation after the step that made the event.
    conversation: p.ConversationSummary
    #: The stored event (a protocol frame with its ``seq``), for the events that are one.
    event: msgspec.Raw | None = None
    #: ``conversation.survey_answered``: the visitor's answers, by question id.
    answers: dict[str, Any] | None = None


class Envelope(msgspec.Struct, frozen=True):
    type: str
    #: When the event happened (the server's clock), RFC 3339.
    timestamp: datetime
    data: EventData


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One event to send: its type and its body (JSON text)."""

    type: str
    body: str


_encoder = msgspec.json.Encoder()


def event_type(effect: Effect) -> str | None:
    """The webhook event ``effect`` makes, if any."""
    if isinstance(effect, Emit):
        return _EMITTED.get(type(effect.frame))
    if isinstance(effect, EnterQueue):
        return "conversation.queued"
    if isinstance(effect, Signal) and isinstance(effect.frame, p.Started):
        return "conversation.started"
    if isinstance(effect, SaveSurvey) and effect.answers is not None:
        return "conversation.survey_answered"
    return None


def webhook_events(
    conv: Conversation,
    effects: list[Effect],
    frames: Mapping[int, str],
    now: datetime,
    wanted: Container[str],
) -> list[WebhookEvent]:
    """The events of one step that are ``wanted``, in order, each with its body; ``frames``:
    the step's stored events as encoded, by seq."""
    summary: p.ConversationSummary | None = None
    found: list[WebhookEvent] = []
    for effect in effects:
        kind = event_type(effect)
        if kind is None or kind not in wanted:
            continue
        if summary is None:
            summary = conv.summary()
        if isinstance(effect, Emit):
            data = EventData(summary, event=msgspec.Raw(frames[effect.seq].encode()))
        elif isinstance(effect, SaveSurvey):
            data = EventData(summary, answers=dict(effect.answers or {}))
        else:
            data = EventData(summary)
        body = _encoder.encode(Envelope(kind, now, data)).decode()
        found.append(WebhookEvent(kind, body))
    return found
