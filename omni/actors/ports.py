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


class CaptchaCheck(Protocol):
    """F19: asks the CAPTCHA provider whether a widget's token is a passed challenge."""

    async def verify(self, response: str) -> bool:
        """True when passed; raises :class:`CaptchaUnavailable` when it cannot be asked."""
        ...


class OutboxSignal(Protocol):
    """Tells the outbox worker that something was queued (F14)."""

    def wake(self) -> None: ...
