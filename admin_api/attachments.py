"""Attachments over HTTP (F11): uploading into a conversation, downloading, download links.

Rules:

* **Who.** A request speaks with ``Authorization: Bearer <token>``: a visitor's resume token
  (their conversation), an operator's console token, a person's sign-in session or an API
  token. A download link (``?expires=…&signature=…``, minted by ``POST …/link`` or with the
  upload) stands for the bearer that minted it, for a while. Wrong tokens count against the
  client like the API's (``admin_api.http.Attempts``).
* **Upload** into a conversation: its visitor while it is open (queued, offered, active, out of
  hours), the operator who holds it while it is active. Anyone else gets the 404 a missing
  conversation gets.
* **Download**: the conversation's visitor, an operator who may see the conversation
  (``Directory.operator_may_see``: the one rule of the console and the API), supervisors and
  administrators; a pending upload (no message carries it yet) only by its uploader and by
  supervisors and administrators. Anyone else, and a missing file, get the same 404.
* **Served safely**: ``X-Content-Type-Options: nosniff``, a sandboxing
  ``Content-Security-Policy``, ``Content-Disposition: attachment`` except for raster images
  (the only types shown inline); SVG, HTML or anything that could run script is never
  accepted in the first place (``omni.domain.attachments``).
* The upload's body is **streamed**, never read whole: the app's "whole body first" rule does
  not apply to it, and every refusal closes the connection (``Connection: close``), so an
  unread body never poisons the next request on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import msgspec
import trio
from quart import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from admin_api.http import Attempts, Problem, bearer_token, json_response
from omni.accounts import SESSION_PREFIX, Accounts
from omni.actors.hub import Hub
from omni.attachments import Upload, Uploads
from omni.domain.attachments import KNOWN_TYPES, Attachment, Refused, disposition
from omni.domain.conversation import Conversation, Status
from omni.domain.model import Role, hash_token

#: The upload route (the app's request class and its "whole body first" rule look for it).
UPLOAD_PATH = re.compile(r"/api/v1/conversations/[^/]+/attachments")
#: How long one upload may take from its first byte to its last (a slow sender holds a
#: connection and a temporary file).
UPLOAD_SECONDS = 600.0

VISITOR_UPLOADS = frozenset({Status.QUEUED, Status.OFFERED, Status.ACTIVE, Status.OUT_OF_HOURS})


class AttachmentOut(msgspec.Struct):
    """An upload kept: pending until a message carries it (``attachment {client_id,
    upload_id}``, docs/protocol.md)."""

    upload_id: str
    conversation_id: str
    name: str
    size: int
    type: str
    #: A download link for the uploader's page (``<img>``, ``<a>``), until ``url_expires_at``.
    url: str
    url_expires_at: datetime


class LinkOut(msgspec.Struct):
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class Party:
    """Whom a bearer token speaks for, where attachments are concerned."""

    kind: Literal["visitor", "operator", "staff"]
    conversation_id: str | None = None
    operator_id: int | None = None


class AttachmentRoutes:
    def __init__(self, hub: Hub, attempts: Attempts, accounts: Accounts, uploads: Uploads) -> None:
        self.hub = hub
        self.attempts = attempts
        self.accounts = accounts
        self.uploads = uploads

    # -- who asks -------------------------------------------------------------------------------

    async def _look_up(self, token: str) -> Party | None:
        if len(token) > 300:
            return None
        directory = self.hub.directory
        if token.startswith(SESSION_PREFIX):
            signed_in = await self.accounts.session(token)
            if signed_in is None:
                return None
            return _party(signed_in.user.role, signed_in.user.operator_id)
        found = directory.api_token(token)
        if found is not None:
            return _party(found.role, found.operator_id)
        operator = directory.operator_by_token(token)
        if operator is not None:
            return Party("operator", operator_id=operator.id)
        conversation_id = await self.hub.store.find_by_token_hash(hash_token(token))
        if conversation_id is not None:
            return Party("visitor", conversation_id=conversation_id)
        return None

    async def party(self) -> Party:
        token = bearer_token()
        if token is None:
            raise Problem(401, "send a token: Authorization: Bearer <token>")
        found = await self.attempts.admit_async(lambda: self._look_up(token))
        if found is None:
            raise Problem(401, "unknown token, or an ended session")
        return found

    async def _conversation(self, conversation_id: str) -> Conversation | None:
        if len(conversation_id) > 64 or "\x00" in conversation_id:
            return None
        return await self.hub.store.load_conversation(conversation_id)

    # -- upload ---------------------------------------------------------------------------------

    async def upload(self, conversation_id: str) -> Response:
        party = await self.party()
        conv = await self._conversation(conversation_id)
        missing = Problem(404, f"no conversation {conversation_id}")
        if conv is None:
            raise missing
        if party.kind == "visitor":
            if party.conversation_id != conv.id:
                raise missing
            if conv.status not in VISITOR_UPLOADS:
                raise Problem(409, "the conversation has ended", kind="conversation-closed")
            uploaded_by = "visitor"
        elif party.kind == "operator":
            if not self._may_see(party, conv):
                raise missing
            if conv.operator_id != party.operator_id or conv.status is not Status.ACTIVE:
                raise Problem(
                    409,
                    "only the operator who holds the conversation sends files in it",
                    kind="conversation-not-held",
                )
            uploaded_by = f"operator:{party.operator_id}"
        else:
            raise Problem(403, "only the conversation's visitor and operator send files in it")
        service = self.hub.directory.services.get(conv.service_id)
        limits = self.hub.directory.attachments_of(service) if service is not None else None
        if limits is None:
            raise Problem(403, "this service accepts no attachments", kind="attachments-disabled")
        name = request.args.get("name")
        if name is not None and (len(name) > 1000 or "\x00" in name):
            raise Problem(400, "name is limited to 1000 characters, without NUL")
        claimed = request.mimetype if request.mimetype in KNOWN_TYPES else None
        upload = Upload(conv.id, uploaded_by, name, claimed, request.content_length, limits)
        try:
            with trio.fail_after(UPLOAD_SECONDS):
                attachment = await self.uploads.receive(upload, _body())
        except Refused as refusal:
            raise Problem(
                refusal.reason.status, refusal.detail, kind=refusal.reason.value
            ) from None
        except trio.TooSlowError:
            raise Problem(408, "the upload took too long", kind="upload-too-slow") from None
        url, until = self.uploads.links.mint(attachment.id, self.hub.clock.now())
        out = AttachmentOut(
            attachment.id,
            attachment.conversation_id,
            attachment.name,
            attachment.size,
            attachment.content_type,
            url,
            until,
        )
        return json_response(
            out, status=201, headers={"Location": f"/api/v1/attachments/{attachment.id}"}
        )

    # -- download ---------------------------------------------------------------------------

    def _may_see(self, party: Party, conv: Conversation) -> bool:
        if party.kind == "staff":
            return True
        if party.kind == "visitor":
            return party.conversation_id == conv.id
        assert party.operator_id is not None
        return self.hub.directory.operator_may_see(
            party.operator_id, conv.service_id, conv.operator_id
        )

    async def _allowed(self, attachment_id: str) -> Attachment:
        """The attachment, if the request's bearer may download it; else the 404 of a
        missing one."""
        party = await self.party()
        found = await self._attachment(attachment_id)
        if found is not None:
            conv = await self._conversation(found.conversation_id)
            mine = (party.kind == "visitor" and found.uploaded_by == "visitor") or (
                party.kind == "operator" and found.uploaded_by == f"operator:{party.operator_id}"
            )
            if (
                conv is None
                or not self._may_see(party, conv)
                or (found.pending and party.kind != "staff" and not mine)
            ):
                found = None
        if found is None:
            raise Problem(404, "no such attachment", kind="attachment-not-found")
        return found

    async def _attachment(self, attachment_id: str) -> Attachment | None:
        if len(attachment_id) > 64 or "\x00" in attachment_id:
            return None
        return await self.hub.store.attachment(attachment_id)

    async def download(self, attachment_id: str) -> Response:
        expires, signature = request.args.get("expires"), request.args.get("signature")
        if expires is not None or signature is not None:
            ok = self.uploads.links.check(
                attachment_id, expires or "", signature or "", self.hub.clock.now()
            )
            found = await self._attachment(attachment_id) if ok else None
            if found is None:
                raise Problem(404, "no such attachment", kind="attachment-not-found")
        else:
            found = await self._allowed(attachment_id)
        return await self._serve(found)

    async def link(self, attachment_id: str) -> Response:
        found = await self._allowed(attachment_id)
        url, until = self.uploads.links.mint(found.id, self.hub.clock.now())
        return json_response(LinkOut(url, until))

    async def _serve(self, attachment: Attachment) -> Response:
        chunks = self.uploads.files.read(attachment.file_key)
        try:
            first = await chunks.__anext__()
        except (FileNotFoundError, StopAsyncIteration):
            # The row outlived its file (deleted by hand): as missing as it looks.
            raise Problem(404, "no such attachment", kind="attachment-not-found") from None

        async def body() -> Any:
            yield first
            async for chunk in chunks:
                yield chunk

        response = Response(body(), content_type=attachment.content_type)
        headers = response.headers
        headers["Content-Length"] = str(attachment.size)
        headers["Content-Disposition"] = disposition(attachment.name, attachment.content_type)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        headers["Referrer-Policy"] = "no-referrer"
        headers["Cache-Control"] = "private, max-age=300"
        return response


def _party(role: Role, operator_id: int | None) -> Party | None:
    if role in (Role.ADMIN, Role.SUPERVISOR):
        return Party("staff")
    if operator_id is None:
        return None
    return Party("operator", operator_id=operator_id)


async def _body() -> Any:
    """The request's body, a chunk at a time as it arrives; a body past the app's ceiling
    (the largest file any service accepts) is counted as too large."""
    try:
        async for chunk in request.body:
            yield chunk
    except RequestEntityTooLarge:
        from omni.domain.attachments import Refusal

        raise Refused(Refusal.TOO_LARGE, "the file is larger than any service accepts") from None
