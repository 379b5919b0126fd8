"""The actors' view of a connected client: something frames can be delivered to.

Rules: delivering never blocks an actor. A peer buffers a bounded number of frames; one that
cannot keep up is disconnected, and its client resumes with ``last_seq`` and gets the missed
events replayed from the store — nothing is lost, and a slow client never slows a conversation.
Frames are encoded once (:func:`omni.domain.protocol.encode`) and the same text goes to every
recipient.
"""

from __future__ import annotations

from typing import Protocol


class Peer(Protocol):
    def deliver(self, frame: str) -> None:
        """Queue one text frame; never blocks."""
        ...

    def close(self, code: str, message: str) -> None:
        """Send an ``error`` frame with ``code`` (if possible) and disconnect."""
        ...
