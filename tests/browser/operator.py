"""The operator's side of the browser tests: an operator driven over the websocket protocol
(:class:`tests.support.Client`) answering the visitor the page is."""

from __future__ import annotations

from tests.support import Client


async def accept_next(operator: Client) -> str:
    """Accept the next conversation offered; its id."""
    offer = await operator.until("offer")
    conversation_id: str = offer["conversation"]["id"]
    await operator.send("accept", conversation_id=conversation_id)
    await operator.until("assigned")
    return conversation_id


async def from_visitor(operator: Client) -> str:
    """The text of the next message the visitor sent (the operator also gets their own
    greeting as a message)."""
    while (frame := await operator.until("message"))["author"]["kind"] != "visitor":
        pass
    text: str = frame["text"]
    return text
