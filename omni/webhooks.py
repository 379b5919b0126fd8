"""Outgoing webhooks' sender (issue 17): the outbox's ``webhook`` kind, sent the Standard
Webhooks way through the SSRF guard (``omni.netguard``).

Rules:

* A delivery is POSTed to its subscription's URL as it is configured *now* (a changed URL or a
  rotated secret applies to pending deliveries too); a subscription deleted or made inactive
  meanwhile parks its deliveries (``permanent``).
* The body is the item's, byte for byte, as the conversation's write stored it; the headers are
  ``webhook-id`` (the message's id: the same on every retry, and for every subscription that
  gets the event), ``webhook-timestamp`` (this attempt's, seconds since the epoch, from the
  server's clock) and ``webhook-signature`` (``v1,`` and the base64 HMAC-SHA256 of
  ``{id}.{timestamp}.{body}`` with the secret's key), signed by the ``standardwebhooks``
  package.
* A 2xx answer delivers; anything else is a failed attempt — a 3xx too (redirects are not
  followed), a refused address (the name now resolves somewhere it may not go), a timeout, a
  connection that failed. Each attempt's outcome is counted by kind for the metrics.
* Failures are described by status, error class and the refused address: never by the URL
  (it may carry a token in its query) nor by the body.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpcore
import trio
from standardwebhooks.webhooks import Webhook as Signer

from omni.domain.model import Directory
from omni.netguard import OutboundHttp, Refused
from omni.outbox import Outcome, RetryPolicy
from omni.settings import WebhooksSettings
from omni.store import OutboxItem

#: Attempt outcomes, the metrics' label values.
OUTCOMES = (
    "delivered",
    "http_error",
    "redirect",
    "timeout",
    "connection_error",
    "address_refused",
    "subscription_gone",
)


def signature_headers(
    secret: str, message_id: str, at: datetime, body: str
) -> list[tuple[str, str]]:
    """The Standard Webhooks headers of ``body`` sent at ``at``."""
    signature = Signer(secret).sign(message_id, at, body)
    return [
        ("webhook-id", message_id),
        ("webhook-timestamp", str(int(at.timestamp()))),
        ("webhook-signature", signature),
    ]


class WebhookSender:
    kind = "webhook"

    def __init__(
        self,
        http: OutboundHttp,
        directory: Callable[[], Directory],
        now: Callable[[], datetime],
        settings: WebhooksSettings,
        counters: dict[str, int] | None = None,
    ) -> None:
        self.http = http
        self.directory = directory
        self.now = now
        self.settings = settings
        #: Attempts by outcome (:data:`OUTCOMES`).
        self.counters = counters if counters is not None else {}
        self.retry = RetryPolicy(
            settings.retry_seconds,
            settings.max_retry_seconds,
            settings.max_attempts,
            settings.jitter,
        )
        # Connect, send, then read: a receiver gets no more than this in all.
        self._deadline = settings.connect_timeout + 2 * settings.read_timeout + 1

    async def deliver(self, item: OutboxItem) -> Outcome:
        hook = self.directory().webhooks.get(item.subscription or "")
        if hook is None or not hook.active:
            state = "deleted" if hook is None else "inactive"
            return self._count(
                "subscription_gone",
                Outcome(False, f"webhook {item.subscription} is {state}", permanent=True),
            )
        body = item.body or ""
        headers = [
            ("Content-Type", "application/json"),
            *signature_headers(hook.secret, str(item.payload["id"]), self.now(), body),
        ]
        try:
            with trio.fail_after(self._deadline):
                answer = await self.http.post(hook.url, body.encode(), headers)
        except Refused as exc:
            return self._count(
                "address_refused",
                Outcome(False, f"refused: {exc.message}", f"refused {exc.address}"),
            )
        except (httpcore.TimeoutException, trio.TooSlowError) as exc:
            name = type(exc).__name__
            return self._count("timeout", Outcome(False, f"{name}: no answer in time", name))
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            name = type(exc).__name__
            return self._count("connection_error", Outcome(False, f"{name}: {exc}"[:500], name))
        status = answer.status
        if 200 <= status < 300:
            return self._count("delivered", Outcome(True, status_code=status))
        if 300 <= status < 400:
            where = f" to {answer.location}" if answer.location else ""
            error = f"HTTP {status}: redirect{where[:300]} not followed"
            return self._count(
                "redirect", Outcome(False, error, f"HTTP {status}", status_code=status)
            )
        excerpt = answer.body[:200].decode("utf-8", "replace")
        error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        return self._count(
            "http_error", Outcome(False, error, f"HTTP {status}", status_code=status)
        )

    def _count(self, outcome: str, result: Outcome) -> Outcome:
        self.counters[outcome] = self.counters.get(outcome, 0) + 1
        return result
