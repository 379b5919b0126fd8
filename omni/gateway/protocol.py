"""The websocket protocol's inbound frames (docs/protocol.md), decoded and validated by msgspec.

Rules: a frame is decoded once, straight into a typed struct; anything that does not fit becomes
a :class:`FrameError` with one of the stable codes below and the reason msgspec gives (which
names the offending field, e.g. ``Expected `int`, got `str` - at `$.service_id```). Unknown extra
fields are ignored, so newer clients keep working with this server.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PROTOCOL_VERSION = 1

ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ConversationId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Seq = Annotated[int, msgspec.Meta(ge=0)]
Text = Annotated[str, msgspec.Meta(max_length=100_000)]
ShortText = Annotated[str, msgspec.Meta(max_length=500)]

#: Every error code the server sends, with when. docs/protocol.md lists the same table.
ERROR_CODES: dict[str, str] = {
    "bad_json": "the frame is not valid JSON",
    "unknown_type": "the frame's `type` is missing or not one this endpoint knows",
    "invalid_frame": "a field is missing, of the wrong type or out of range",
    "frame_too_large": "the frame is larger than the server's limit",
    "binary_not_supported": "the frame is binary; the protocol uses text frames",
    "not_started": "the visitor sent a conversation frame before `start` or `resume`",
    "already_started": "`start` or `resume` on a connection that already has a conversation",
    "unknown_service": "no chat service has this id",
    "invalid_identity": "the signed `identity` is not valid, has expired, or is not accepted here",
    "captcha_required": "`start` without `captcha` on a service that asks for one",
    "captcha_failed": "the CAPTCHA provider says the challenge was not passed",
    "captcha_unavailable": "the CAPTCHA could not be checked now (or is not set up); retry",
    "origin_not_allowed": "the page's origin is not among the service's allowed embedding origins",
    "invalid_token": "the resume token matches no conversation",
    "invalid_seq": "`last_seq` is negative or beyond the conversation's last event",
    "invalid_state": "the action is not allowed in the conversation's current status",
    "message_too_long": "the message text is longer than the server accepts",
    "invalid_survey": "a survey answer is unknown, missing or out of range",
    "conversation_closed": "the conversation has ended; nothing more is accepted",
    "invalid_email": "the `transcript` address is not a single e-mail address",
    "transcript_unavailable": "this server sends no e-mail (no `[server.smtp]`)",
    "transcript_disabled": "the conversation's service does not send transcripts",
    "too_many_transcripts": "the transcript already went to the most addresses allowed (3)",
    "not_logged_in": "an operator frame before a successful `login`",
    "already_logged_in": "`login` on a connection that is already signed in",
    "invalid_login": "the operator token is unknown or the operator inactive",
    "unknown_conversation": "no open conversation has this id",
    "not_your_conversation": "the conversation is held by another operator",
    "unknown_folder": "`folder` with a name the console does not have (out_of_hours)",
    "invalid_cursor": "`folder` with a cursor the server did not give",
    "not_offered": "`accept` for a conversation not offered to this operator (or no longer)",
    "unknown_group": "no group has this id",
    "unknown_operator": "no active operator has this id",
    "operator_unavailable": "the transfer's target operator is offline or at capacity",
    "invalid_transfer": "a transfer to the operator who holds the conversation",
    "superseded": "the conversation was resumed on another connection; this one closes",
    "session_replaced": "the operator signed in on another connection; this one closes",
    "slow_consumer": "the client did not read its frames fast enough; it should resume",
    "overloaded": "the server could not take the frame in time; retry it",
    "operator_deactivated": "an administrator deactivated or removed this operator; it closes",
    "server_shutdown": "the server is stopping; the client resumes against the next one",
    "internal_error": "a fault in the server; the connection closes and the client resumes",
}


class FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message


class _Frame(msgspec.Struct, tag_field="type"):
    pass


# -- visitor → server -------------------------------------------------------------------------


class VisitorInfo(msgspec.Struct):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    email: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    phone: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    fields: dict[ShortText, ShortText] = {}

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        if self.email is not None:
            data["email"] = self.email
        if self.phone is not None:
            data["phone"] = self.phone
        if self.fields:
            data["fields"] = dict(self.fields)
        return data


class Start(_Frame, tag="start"):
    service_id: int
    #: Required unless ``identity`` is given (then only its ``fields`` are used).
    visitor: VisitorInfo | None = None
    #: A JWT (HS256) signed by the embedding site with the service's identity secret (F8).
    identity: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None
    #: The token the CAPTCHA widget gave the page (F19), for services that ask for one.
    captcha: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)] | None = None


class Resume(_Frame, tag="resume"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    last_seq: Seq = 0


class VisitorMessage(_Frame, tag="message"):
    client_id: ClientId
    text: Text


class VisitorTyping(_Frame, tag="typing"):
    pass


class VisitorEnd(_Frame, tag="end"):
    pass


class SurveyAnswers(_Frame, tag="survey"):
    answers: dict[ShortText, int | str | None]


class SurveySkip(_Frame, tag="survey_skip"):
    pass


class TranscriptRequest(_Frame, tag="transcript"):
    email: Annotated[str, msgspec.Meta(min_length=1, max_length=320)]


class Ping(_Frame, tag="ping"):
    pass


VisitorFrame = (
    Start
    | Resume
    | VisitorMessage
    | VisitorTyping
    | VisitorEnd
    | SurveyAnswers
    | SurveySkip
    | TranscriptRequest
    | Ping
)

# -- operator → server ------------------------------------------------------------------------


class Login(_Frame, tag="login"):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Status(_Frame, tag="status"):
    status: Literal["available", "paused"]


class Accept(_Frame, tag="accept"):
    conversation_id: ConversationId


class Sync(_Frame, tag="sync"):
    conversation_id: ConversationId
    last_seq: Seq = 0


class OperatorMessage(_Frame, tag="message"):
    conversation_id: ConversationId
    client_id: ClientId
    text: Text


class OperatorTyping(_Frame, tag="typing"):
    conversation_id: ConversationId


class Transfer(_Frame, tag="transfer"):
    conversation_id: ConversationId
    group_id: int | None = None
    operator_id: int | None = None


class OperatorEnd(_Frame, tag="end"):
    conversation_id: ConversationId


class OperatorResume(_Frame, tag="resume"):
    conversation_id: ConversationId


class Folder(_Frame, tag="folder"):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


OperatorFrame = (
    Login
    | Status
    | Accept
    | Sync
    | OperatorMessage
    | OperatorTyping
    | Transfer
    | OperatorEnd
    | OperatorResume
    | Folder
    | Ping
)

_visitor_decoder = msgspec.json.Decoder(VisitorFrame)
_operator_decoder = msgspec.json.Decoder(OperatorFrame)


def _decode(decoder: msgspec.json.Decoder[Any], data: str | bytes, limit: int) -> Any:
    if isinstance(data, bytes):
        raise FrameError("binary_not_supported", "send JSON as text frames")
    # The limit is in UTF-8 bytes; only a frame that could exceed it is encoded to count them.
    if len(data) > limit or (len(data) * 4 > limit and len(data.encode()) > limit):
        raise FrameError("frame_too_large", f"frames are limited to {limit} bytes")
    if "\\u0000" in data or "\x00" in data:
        # Text is stored in PostgreSQL, which cannot hold NUL: refuse it with a reason.
        raise FrameError("invalid_frame", "text must not contain NUL characters (\\u0000)")
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        reason = str(exc)
        if reason.endswith("at `$.type`") or "required field `type`" in reason:
            raise FrameError("unknown_type", reason) from None
        raise FrameError("invalid_frame", reason) from None
    except msgspec.DecodeError as exc:
        raise FrameError("bad_json", str(exc)) from None


def decode_visitor(data: str | bytes, limit: int) -> VisitorFrame:
    frame: VisitorFrame = _decode(_visitor_decoder, data, limit)
    return frame


def decode_operator(data: str | bytes, limit: int) -> OperatorFrame:
    frame: OperatorFrame = _decode(_operator_decoder, data, limit)
    return frame
