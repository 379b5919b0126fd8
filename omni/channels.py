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
* An operator's file goes as the platform's media message (:func:`media_request`) with a
  signed download link on the server's ``public_url``, minted at each attempt and good for as
  long as the file is kept (a week when kept for ever), so that the platform can fetch it
  whenever it does; without a ``public_url`` (the platform could not reach the server) it goes
  as its name, as text.
* A visitor's image or document is fetched from the platform (:class:`MediaFetcher`: WhatsApp's
  media URL, Telegram's ``getFile``) through the same guard, by the inbound request before the
  conversation's actor sees the message, and kept by the attachment pipeline as the visitor's
  pending upload (type from content, size limit counted as it streams, images re-encoded,
  the conversation's quota) for the message to claim. A file that cannot be kept — files off
  for the service, a type not allowed, too large, the platform failing — leaves the message
  naming it, and the log says why.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from urllib.parse import quote

import httpcore
import msgspec
import trio
from standardwebhooks.webhooks import Webhook as Signer
from standardwebhooks.webhooks import WebhookVerificationError

from omni.attachments import Upload, Uploads
from omni.domain.attachments import Refused as FileRefused
from omni.domain.channels import Media, media_request, reply_request, whatsapp_signed
from omni.domain.model import Channel, Directory
from omni.netguard import OutboundHttp, Refused
from omni.outbox import Outcome, RetryPolicy
from omni.settings import WebhooksSettings
from omni.store import OutboxItem
from omni.webhooks import signature_headers

log = logging.getLogger(__name__)

#: Seconds a visitor's file may take to come from its platform, from the first request to
#: the last byte (the platform's own webhook retry covers a request that takes longer).
MEDIA_SECONDS = 120.0


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
        #: An attachment's absolute download link for a platform to fetch, or None (no
        #: ``public_url``): set by the server once it serves files.
        self.media_link: Callable[[str], str | None] = lambda _attachment_id: None

    def _request(
        self, channel: Channel, payload: Mapping[str, object]
    ) -> tuple[str, list[tuple[str, str]], dict[str, object]]:
        to, text = str(payload["to"]), str(payload["text"])
        file = payload.get("attachment")
        if isinstance(file, Mapping):
            link = self.media_link(str(file["id"]))
            name = str(file["name"])
            if link is not None:
                caption = "" if text == name else text
                media = media_request(channel, to, str(file["type"]), link, name, caption)
                if media is not None:
                    return media
        return reply_request(channel, to, text)

    async def deliver(self, item: OutboxItem) -> Outcome:
        payload = item.payload
        channel = self.directory().channels.get(str(payload.get("channel")))
        if channel is None or not channel.active:
            state = "deleted" if channel is None else "inactive"
            return Outcome(False, f"channel {payload.get('channel')} is {state}", permanent=True)
        url, headers, body = self._request(channel, payload)
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


class MediaUnavailable(Exception):
    """The platform did not give a file: why, without its URL (Telegram's carries the token)."""


class MediaFetcher:
    """Fetches the files visitors send on channels into the attachment pipeline."""

    def __init__(self, http: OutboundHttp, uploads: Uploads, directory: Callable[[], Directory]):
        self.http = http
        self.uploads = uploads
        self.directory = directory

    async def keep(self, channel: Channel, media: Media, conversation_id: str) -> str | None:
        """Fetch ``media`` and keep it as the visitor's pending upload in the conversation:
        its id, or None (logged) when it cannot be kept."""
        directory = self.directory()
        service = directory.services.get(channel.service_id)
        limits = directory.attachments_of(service) if service is not None else None
        if limits is None or not limits.enabled:
            log.info(
                "channel %s: a visitor's %s is named, not kept: the service accepts no files",
                channel.id,
                media.kind,
            )
            return None
        try:
            with trio.fail_after(MEDIA_SECONDS):
                url, size = await self._locate(channel, media)
                headers = _auth(channel)
                async with self.http.stream(url, headers) as (status, length, chunks):
                    if not 200 <= status < 300:
                        raise MediaUnavailable(f"the file's download answered HTTP {status}")
                    known = [n for n in (size, media.size, length) if n is not None]
                    upload = Upload(
                        conversation_id,
                        "visitor",
                        media.name,
                        None,
                        max(known) if known else None,
                        limits,
                    )
                    attachment = await self.uploads.receive(upload, _chunks(chunks))
        except FileRefused as refusal:
            log.info(
                "channel %s: a visitor's %s is named, not kept: %s (%s)",
                channel.id,
                media.kind,
                refusal.detail,
                refusal.reason.value,
            )
            return None
        except MediaUnavailable as exc:
            log.warning("channel %s: a visitor's file could not be fetched: %s", channel.id, exc)
            return None
        except Refused as exc:
            log.warning("channel %s: a visitor's file was refused: %s", channel.id, exc.message)
            return None
        except (
            httpcore.TimeoutException,
            trio.TooSlowError,
            httpcore.NetworkError,
            httpcore.ProtocolError,
            OSError,
        ) as exc:
            name = type(exc).__name__
            log.warning("channel %s: a visitor's file did not come: %s", channel.id, name)
            return None
        return attachment.id

    async def _locate(self, channel: Channel, media: Media) -> tuple[str, int | None]:
        """Where the platform serves the file, and its size when the platform says it."""
        if channel.kind == "whatsapp":
            url = f"{channel.api_url}/{channel.api_version}/{quote(media.ref, safe='')}"
            found = await self._json(url, _auth(channel))
            link, size = found.get("url"), found.get("file_size")
        elif channel.kind == "telegram":
            base = f"{channel.api_url}/bot{channel.token}"
            found = await self._json(f"{base}/getFile?file_id={quote(media.ref, safe='')}", [])
            result = found.get("result") if found.get("ok") is True else None
            path = result.get("file_path") if isinstance(result, dict) else None
            if not isinstance(path, str) or not path:
                raise MediaUnavailable("getFile gave no file_path")
            link = f"{channel.api_url}/file/bot{channel.token}/{quote(path)}"
            size = result.get("file_size") if isinstance(result, dict) else None
        else:
            raise MediaUnavailable(f"a {channel.kind} channel has no media to fetch")
        if not isinstance(link, str) or not link:
            raise MediaUnavailable("the platform gave no URL for the file")
        return link, size if isinstance(size, int) and size >= 0 else None

    async def _json(self, url: str, headers: list[tuple[str, str]]) -> dict[str, object]:
        answer = await self.http.get(url, headers)
        if not 200 <= answer.status < 300:
            raise MediaUnavailable(f"the file's description answered HTTP {answer.status}")
        try:
            found = msgspec.json.decode(answer.body)
        except msgspec.DecodeError:
            raise MediaUnavailable("the file's description is not JSON") from None
        if not isinstance(found, dict):
            raise MediaUnavailable("the file's description is not a JSON object")
        return found


def _auth(channel: Channel) -> list[tuple[str, str]]:
    """WhatsApp's media (its description and its bytes) needs the bearer token; Telegram's
    token is in the path."""
    return [("Authorization", f"Bearer {channel.token}")] if channel.kind == "whatsapp" else []


async def _chunks(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk:
            yield chunk
