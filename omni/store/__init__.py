"""Storage: one :class:`Store` protocol; ``MemoryStore`` now, ``PostgresStore`` beside it.

Rules of this package:

* Every write a conversation makes in one step goes through one :meth:`Store.write` call; when it
  returns, the write is durable (for the memory store: recorded). Callers release acks and
  deliveries only after it returns.
* A conversation's events are kept with their ``seq``; ``(conversation_id, seq)`` is unique and
  an event is never rewritten.
* Stores keep the hash of a resume token, never the token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from omni.domain.conversation import Conversation


class StoreError(Exception):
    """A write or read the store could not do; the message says what to do about it."""


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


@dataclass(slots=True)
class Write:
    """What one step of one conversation changes."""

    conversation: Conversation | None = None
    events: list[StoredEvent] = field(default_factory=list)
    survey: dict[str, Any] | None = None
    survey_skipped: bool = False


class Store(Protocol):
    async def next_ticket(self, year: int) -> int:
        """The next ticket number of ``year``: 1, 2, 3, … never reused."""
        ...

    async def write(self, write: Write) -> None: ...

    async def load_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation with its ``last_seq`` and its seen ``client_ids`` restored."""
        ...

    async def find_by_token_hash(self, token_hash: str) -> str | None: ...

    async def events_after(self, conversation_id: str, after_seq: int) -> list[StoredEvent]: ...

    async def survey(self, conversation_id: str) -> dict[str, Any] | None: ...

    async def open_conversations(self) -> list[Conversation]:
        """Conversations to put back into routing at start-up (queued, offered, active, waiting
        for the survey), in queue order; out-of-hours ones are restored only when reached."""
        ...
