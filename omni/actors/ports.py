"""What the actors need from the outside world, as narrow Protocols (hypercorn's ``typing.py``
habit): the edges implement them, the actors never import an edge.

Rules: a port names only what its user calls, and the exceptions it may raise are defined
here, beside it, so the actor that catches them and the edge that raises them share one
definition.
"""

from __future__ import annotations

from typing import Protocol


class CaptchaUnavailable(Exception):
    """The CAPTCHA could not be checked (not: it was checked and failed)."""


class CaptchaLimited(Exception):
    """The client asked for too many checks; it may ask again after ``retry_after`` s."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class CaptchaCheck(Protocol):
    """F19: asks the CAPTCHA provider whether a widget's token is a passed challenge."""

    async def verify(self, response: str, client: str | None = None) -> bool:
        """True when passed (``client``: the visitor's address); raises
        :class:`CaptchaUnavailable` when it cannot be asked, :class:`CaptchaLimited` when the
        client asked too often."""
        ...


class OutboxSignal(Protocol):
    """Tells the outbox worker that something was queued (F14, webhooks)."""

    def wake(self) -> None: ...

    def sends(self, kind: str) -> bool:
        """Whether this server delivers items of ``kind`` (``email``: only with SMTP)."""
        ...


class LinkSigner(Protocol):
    """Signs what a link carries with the server's key (``omni.attachments.Links``): a link is
    trusted because the server signed it, for one ``purpose``, until ``expires``."""

    def sign(self, purpose: str, subject: str, expires: int) -> str:
        """The signature of ``subject`` for ``purpose`` until ``expires`` (Unix seconds)."""
        ...

    def signed(self, purpose: str, subject: str, expires: int, signature: str) -> bool:
        """Whether ``signature`` is the server's for these (whatever the time)."""
        ...
