"""The messaging channels' inbound door (issue 17): ``/channels/{id}/webhook``, where each
platform POSTs what people write (and WhatsApp GETs its subscription's challenge).

Rules:

* Nothing is read before the request proves it comes from the channel's platform
  (:func:`omni.channels.authentic`): 401 otherwise, and nothing is stored. An unknown or
  inactive channel is 404, whatever the request.
* A platform retries what it does not see answered 200: every message of an authentic request
  is taken (or dropped as one taken before) before the 200; a failure of the store is a 500,
  and the platform's retry is dropped or taken as the store says — never twice.
* A payload that holds no message a person wrote (a delivery receipt, an edit) is answered
  200 and ignored: the platform has nothing to fix.
"""

from __future__ import annotations

import hmac
import json
import logging

from quart import Response, request
from quart_trio import QuartTrio

from omni.actors.hub import Hub
from omni.channels import authentic
from omni.domain.channels import PARSERS
from omni.domain.conversation import Rejected
from omni.domain.model import Channel

log = logging.getLogger(__name__)

PATH = "/channels/<channel_id>/webhook"


def _channel(hub: Hub, channel_id: str) -> Channel | None:
    channel = hub.directory.channels.get(channel_id)
    return channel if channel is not None and channel.active else None


def _text(status: int, body: str) -> Response:
    return Response(body, status=status, content_type="text/plain; charset=utf-8")


def channel_routes(app: QuartTrio, hub: Hub) -> None:
    @app.get(PATH)
    async def verify_subscription(channel_id: str) -> Response:
        """WhatsApp's subscription check: ``hub.mode=subscribe`` with the channel's verify
        token is answered with ``hub.challenge``."""
        channel = _channel(hub, channel_id)
        if channel is None:
            return _text(404, "no such channel")
        if channel.kind != "whatsapp" or channel.verify_token is None:
            return _text(405, "this channel takes POSTs only")
        given = request.args.get("hub.verify_token", "")
        if request.args.get("hub.mode") != "subscribe" or not hmac.compare_digest(
            given.encode(), channel.verify_token.encode()
        ):
            return _text(403, "verification refused")
        return _text(200, request.args.get("hub.challenge", ""))

    @app.post(PATH)
    async def take_messages(channel_id: str) -> Response:
        channel = _channel(hub, channel_id)
        if channel is None:
            return _text(404, "no such channel")
        body = await request.get_data(cache=True)
        assert isinstance(body, bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not authentic(channel, body, headers):
            log.warning("channel %s: a request without a valid signature was refused", channel.id)
            return _text(401, "invalid signature")
        try:
            payload = json.loads(body)
        except ValueError:
            return _text(400, "the body is not JSON")
        for message in PARSERS[channel.kind](payload):
            try:
                await hub.channel_message(channel, message)
            except Rejected as exc:
                log.error("channel %s: a message was not taken: %s", channel.id, exc.code)
                return _text(503, "the channel cannot take messages now")
        return _text(200, "ok")
