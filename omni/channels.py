"""Messaging channels' edge (issue 17): the outbox's ``channel`` kind — replies sent through
each platform's HTTP API, through the SSRF guard (``omni.netguard``) like every outgoing call —
and the checks of what a platform POSTs (:func:`authentic`).

Rules:

* A reply is sent to its channel as it is configured *now* (a rotated token applies to pending
  replies too); a channel deleted or made inactive meanwhile parks them (``permanent``).
* Requests are the platforms' published ones (:func:`omni.domain.channels.reply_request`): the
  WhatsApp Cloud API's ``/{version}/{phone_number_id}/messages`` with the bearer token,
  Telegram's ``/bot<token>/sendMessage``, and the generic channel's POST to its ``reply_url``,
  signed the Standard Webhooks way with the channel's secret (``webhook-id``: the reply's
  :func:`reply_id`, the same on every retry).
* A 2xx answer delivers; anything else is a failed attempt, retried with the webhooks'
  policy (``[server.webhooks]``); each reply goes once the one before it of its conversation
  went (the outbox's order per conversation).
* Failures are described by status and error class, never by the URL (Telegram's carries
  the bot token) nor by the text.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from datetime import datetime

import httpcore
import msgspec
import trio
from standardwebhooks.webhooks import Webhook as Signer
from standardwebhooks.webhooks import WebhookVerificationError

from omni.domain.channels import reply_request, whatsapp_signed
from omni.domain.model import Channel, Directory
from omni.netguard import OutboundHttp, Refused
from omni.outbox import Outcome, RetryPolicy
from omni.settings import WebhooksSettings
from omni.store import OutboxItem
from omni.webhooks import signature_headers


def authentic(channel: Channel, body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether a POST to the channel's webhook comes from its platform: WhatsApp's
    ``X-Hub-Signature-256`` with the app secret, Telegram's ``X-Telegram-Bot-Api-Secret-Token``
    (the ``secret_token`` given to ``setWebhook``), the generic channel's Standard Webhooks
    signature with its secret (and a timestamp within five minutes). ``headers``' names are
    lower case."""
    if channel.kind == "whatsapp":
        assert channel.app_secret is not None
        return whatsapp_signed(channel.app_secret, body, headers.get("x-hub-signature-256"))
    if channel.kind == "telegram":
        given = headers.get("x-telegram-bot-api-secret-token", "")
        assert channel.secret_token is not None
        return hmac.compare_digest(given.encode(), channel.secret_token.encode())
    assert channel.secret is not None
    try:
        Signer(channel.secret).verify(body, dict(headers))
    except (WebhookVerificationError, ValueError, KeyError):
        return False
    return True


def reply_id(item: OutboxItem) -> str:
    """A reply's id, the same on every attempt: the generic channel's ``webhook-id``, and the
    API's ``message_id`` of the delivery — ``<conversation id>-<seq>`` (``.<part>`` for a part
    of a long text), or the payload's own ``id`` (a notice that no event made)."""
    payload = item.payload
    if "id" in payload:
        return str(payload["id"])
    part = payload.get("part")
    return f"{item.conversation_id}-{payload.get('seq')}" + (f".{part}" if part else "")


class ChannelSender:
    kind = "channel"

    def __init__(
        self,
        http: OutboundHttp,
        directory: Callable[[], Directory],
        now: Callable[[], datetime],
        settings: WebhooksSettings,
    ) -> None:
        self.http = http
        self.directory = directory
        self.now = now
        self.retry = RetryPolicy(
            settings.retry_seconds,
            settings.max_retry_seconds,
            settings.max_attempts,
            settings.jitter,
        )
        self._deadline = settings.connect_timeout + 2 * settings.read_timeout + 1

    async def deliver(self, item: OutboxItem) -> Outcome:
        payload = item.payload
        channel = self.directory().channels.get(str(payload.get("channel")))
        if channel is None or not channel.active:
            state = "deleted" if channel is None else "inactive"
            return Outcome(False, f"channel {payload.get('channel')} is {state}", permanent=True)
        url, headers, body = reply_request(channel, str(payload["to"]), str(payload["text"]))
        if channel.kind == "generic":
            body = {**body, "conversation_id": item.conversation_id, "seq": payload["seq"]}
        encoded = msgspec.json.encode(body)
        sent = [("Content-Type", "application/json"), *headers]
        if channel.kind == "generic":
            assert channel.secret is not None
            sent += signature_headers(channel.secret, reply_id(item), self.now(), encoded.decode())
        try:
            with trio.fail_after(self._deadline):
                answer = await self.http.post(url, encoded, sent)
        except Refused as exc:
            return Outcome(False, f"refused: {exc.message}", f"refused {exc.address}")
        except (httpcore.TimeoutException, trio.TooSlowError) as exc:
            name = type(exc).__name__
            return Outcome(False, f"{name}: no answer in time", name)
        except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
            name = type(exc).__name__
            return Outcome(False, name, name)
        status = answer.status
        if 200 <= status < 300:
            return Outcome(True, status_code=status)
        excerpt = answer.body[:200].decode("utf-8", "replace")
        error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        return Outcome(False, error, f"HTTP {status}", status_code=status)
