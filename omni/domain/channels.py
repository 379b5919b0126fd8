"""Messaging channels (issue 17), sans-IO: what a platform's webhook carries becomes
:class:`Inbound` messages, and what the visitor would have seen in the WebChat becomes the text
a channel sends back.

Rules of this module:

* A platform's payload is read defensively: anything that is not a message a person wrote (a
  delivery receipt, an edit, a reaction, a bot's own message) is skipped, never an error; a
  message whose shape is wrong is skipped too. Each message keeps the platform's own id — the
  key that drops a delivery the platform repeats.
* A file a visitor sends (an image, a document, …) becomes a message that names it (its
  ``text``); an image or a document also says where the platform keeps it (:class:`Media`),
  for the edge to fetch it and make the message carry it — the naming text stays the message
  when it cannot.
* What a channel sends is text — an operator's message, the bot's
  words with its options as a numbered list (a typed number or label answers, as the bot
  takes it from a plain message), the out-of-hours message, and the closing message with the
  survey's link when the service sends one (:func:`~omni.domain.conversation.closing_text`).
  Queue positions, typing and the like are not sent — and an operator's file, as the
  platform's image or document message that links it (:func:`media_request`; its name as text
  where the platform has no such message or the server no public address).
* A message the rules refuse is not lost in silence: the visitor is told why in a short text
  (:func:`refusal_text`, in the service's language), once per kind of refusal per conversation.
* A text longer than its platform takes in one message (:data:`TEXT_LIMITS`) is sent as
  several, in order, cut after whitespace where one falls in the second half of a part
  (:func:`split_text`); the parts put together are the text.
* WhatsApp's signature (``X-Hub-Signature-256``) is checked here, in constant time; the
  Standard Webhooks signature of the generic channel is checked at the edge, by the package
  that signs the outgoing ones.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omni.domain import protocol as p
from omni.domain.conversation import closing_text
from omni.domain.model import Channel, Service

#: Longest text taken from a platform message, in characters (the conversation's own limit).
MAX_TEXT = 8000
#: The WebChat's "talk to a person" option, as a channel lists it.
PERSON_OPTION = "@person"
#: The longest text a platform takes in one message: WhatsApp's text ``body`` and Telegram's
#: ``sendMessage`` both 4096 characters. Counted here in UTF-16 code units (an emoji beyond the
#: BMP counts two), the stricter reading of "characters". The generic channel has none.
TEXT_LIMITS: Mapping[str, int] = {"whatsapp": 4096, "telegram": 4096}


@dataclass(frozen=True, slots=True)
class Media:
    """A file a platform keeps for a message: ``ref`` is WhatsApp's media id or Telegram's
    ``file_id``; ``name`` the file's name when the platform says it; ``caption`` what the
    person wrote with it."""

    kind: str  # "image" | "document"
    ref: str
    name: str | None = None
    caption: str = ""
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message a person wrote on a channel: the platform's ``message_id`` (unique in the
    channel), who wrote (``user``: where replies go), and what (``text``; with ``media``, the
    text that names the file, the message when the file cannot be fetched)."""

    message_id: str
    user: str
    name: str
    text: str
    phone: str | None = None
    media: Media | None = None


# -- what platforms send --------------------------------------------------------------------------


def whatsapp_signed(app_secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` (``sha256=<hex>``) is the HMAC-SHA256 of the raw
    ``body`` with the app secret."""
    if header is None or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header.removeprefix("sha256=").strip().lower())


def _text(value: object) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _named(kind: str, name: str, caption: str) -> str:
    shown = f"[{kind}: {name}]" if name else f"[{kind}]"
    return f"{shown} {caption}".strip()


def _whatsapp_media(message: Mapping[str, Any]) -> Media | None:
    kind = message.get("type")
    media = message.get(kind) if kind in ("image", "document") else None
    if not isinstance(media, Mapping) or not isinstance(media.get("id"), str):
        return None
    name = _text(media.get("filename"))[:1000] or None
    return Media(str(kind), media["id"], name, _text(media.get("caption")))


def _telegram_media(message: Mapping[str, Any]) -> Media | None:
    caption = _text(message.get("caption"))
    document = message.get("document")
    if isinstance(document, Mapping) and isinstance(document.get("file_id"), str):
        name = _text(document.get("file_name"))[:1000] or None
        size = document.get("file_size")
        return Media(
            "document", document["file_id"], name, caption, size if isinstance(size, int) else None
        )
    # A photo comes in several sizes, smallest first: the largest is the picture.
    sizes = [s for s in _list(message.get("photo")) if isinstance(s.get("file_id"), str)]
    if sizes:
        largest = sizes[-1]
        size = largest.get("file_size")
        return Media(
            "image", largest["file_id"], None, caption, size if isinstance(size, int) else None
        )
    return None


def _whatsapp_text(message: Mapping[str, Any]) -> str:
    kind = message.get("type")
    if kind == "text":
        return _text((message.get("text") or {}).get("body"))
    media = message.get(kind) if isinstance(kind, str) else None
    if not isinstance(media, Mapping):
        media = {}
    caption = _text(media.get("caption"))
    if kind == "document":
        return _named("document", _text(media.get("filename")), caption)
    if kind in ("image", "video", "audio", "sticker"):
        return _named(kind, "", caption)
    if kind == "location":
        return _named("location", _text(media.get("name")), _text(media.get("address")))
    if kind == "interactive":  # a reply button or a list row
        reply = media.get("button_reply") or media.get("list_reply") or {}
        return _text(reply.get("title"))
    if kind == "button":
        return _text(media.get("text"))
    return _named(str(kind or "message"), "", "")


def parse_whatsapp(body: Any) -> list[Inbound]:
    """The messages of a WhatsApp Cloud API webhook (``entry[].changes[].value.messages[]``,
    the sender's profile name from ``contacts[]``)."""
    found: list[Inbound] = []
    if not isinstance(body, Mapping):
        return found
    for entry in _list(body.get("entry")):
        for change in _list(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, Mapping):
                continue
            names = {
                c.get("wa_id"): _text((c.get("profile") or {}).get("name"))
                for c in _list(value.get("contacts"))
            }
            for message in _list(value.get("messages")):
                sender, message_id = message.get("from"), message.get("id")
                if not isinstance(sender, str) or not isinstance(message_id, str):
                    continue
                text = _whatsapp_text(message)
                if not text or not sender or not message_id:
                    continue
                name = names.get(sender) or f"+{sender}"
                found.append(
                    Inbound(
                        message_id,
                        sender,
                        name[:200],
                        text,
                        f"+{sender}"[:64],
                        _whatsapp_media(message),
                    )
                )
    return found


def parse_telegram(body: Any) -> list[Inbound]:
    """The message of a Telegram Bot API update (``message``; its ``update_id`` is the id
    that drops a repeated delivery). Edits, channel posts and bots' messages are skipped."""
    if not isinstance(body, Mapping):
        return []
    update_id, message = body.get("update_id"), body.get("message")
    if not isinstance(update_id, int) or not isinstance(message, Mapping):
        return []
    chat, sender = message.get("chat"), message.get("from") or {}
    if not isinstance(chat, Mapping) or not isinstance(chat.get("id"), int | str):
        return []
    if isinstance(sender, Mapping) and sender.get("is_bot"):
        return []
    caption = _text(message.get("caption"))
    if "text" in message:
        text = _text(message.get("text"))
    elif "document" in message:
        text = _named("document", _text((message["document"] or {}).get("file_name")), caption)
    elif "photo" in message:
        text = _named("image", "", caption)
    else:
        kind = next(
            (k for k in ("video", "voice", "audio", "sticker", "location") if k in message), None
        )
        text = _named(kind, "", caption) if kind else ""
    if not text:
        return []
    first = _text(sender.get("first_name")) if isinstance(sender, Mapping) else ""
    last = _text(sender.get("last_name")) if isinstance(sender, Mapping) else ""
    name = f"{first} {last}".strip() or f"Telegram {chat['id']}"
    media = _telegram_media(message) if "text" not in message else None
    return [Inbound(str(update_id), str(chat["id"]), name[:200], text, None, media)]


def parse_generic(body: Any) -> list[Inbound]:
    """The generic channel's message: ``{"id", "from", "text", "name"?, "phone"?}`` — or a
    list of them under ``messages``."""
    if not isinstance(body, Mapping):
        return []
    items = body.get("messages") if "messages" in body else [body]
    found = []
    for item in _list(items):
        message_id, sender, text = item.get("id"), item.get("from"), _text(item.get("text"))
        if not isinstance(message_id, str) or not isinstance(sender, str) or not text:
            continue
        if not 0 < len(message_id) <= 200 or not 0 < len(sender) <= 200:
            continue
        name = _text(item.get("name")) or sender
        phone = item.get("phone") if isinstance(item.get("phone"), str) else None
        found.append(Inbound(message_id, sender, name[:200], text, phone and phone[:64]))
    return found


PARSERS: Mapping[str, Callable[[Any], list[Inbound]]] = {
    "whatsapp": parse_whatsapp,
    "telegram": parse_telegram,
    "generic": parse_generic,
}


def _list(value: object) -> Iterable[Mapping[str, Any]]:
    if not isinstance(value, list):
        return ()
    return (v for v in value if isinstance(v, Mapping))


# -- what a channel sends ------------------------------------------------------------------------


def channel_text(frame: p.Event, service: Service, link: Callable[[], str | None]) -> str | None:
    """The text a channel sends for an event the visitor sees (None: nothing). ``link``: the
    survey link for the closing message (asked only then)."""
    if isinstance(frame, p.Message):
        if frame.author.kind == "visitor":
            return None
        return frame.text
    if isinstance(frame, p.BotSays):
        lines = [frame.text] if frame.text else []
        for number, option in enumerate(frame.options, 1):
            lines.append(f"{number}. {option.label}")
        return "\n".join(lines) or None
    if isinstance(frame, p.OutOfHours):
        return frame.message or None
    if isinstance(frame, p.Closed):
        return closing_text(service, link()) or None
    return None


#: What a channel's visitor is told when the rules refuse their message, by the refusal's code
#: and language (``{limit}``: the out-of-hours message limit); ``*``: any other refusal.
REFUSALS: Mapping[str, Mapping[str, str]] = {
    "message_limit": {
        "en": "We have your messages, but this conversation takes at most {limit} of them "
        "until someone answers. We will get back to you.",
        "pt-BR": "Recebemos suas mensagens, mas esta conversa aceita no máximo {limit} até "
        "que alguém responda. Retornaremos em breve.",
    },
    "invalid_reply": {
        "en": "Please answer with one of the options above: its number or its text.",
        "pt-BR": "Por favor, responda com uma das opções acima: o número ou o texto.",
    },
    "*": {
        "en": "Sorry, we could not take that message.",
        "pt-BR": "Desculpe, não foi possível receber essa mensagem.",
    },
}


def refusal_text(code: str, service: Service, limit: int) -> str:
    """What a channel's visitor is told when a message of theirs is refused with ``code``: in
    the service's language (English unless it is pt-BR)."""
    texts = REFUSALS.get(code, REFUSALS["*"])
    language = "pt-BR" if service.language == "pt-BR" else "en"
    return texts[language].format(limit=limit)


def split_text(text: str, limit: int) -> list[str]:
    """``text`` as consecutive parts of at most ``limit`` UTF-16 code units, whose
    concatenation is ``text``: each part ends after the last whitespace that fits when that
    falls in the part's second half (no tiny parts), else at the limit — never inside a
    character. A text that fits is one part."""
    parts: list[str] = []
    start, end = 0, len(text)
    while start < end:
        used, cut, after_space = 0, start, 0
        while cut < end:
            units = 2 if ord(text[cut]) > 0xFFFF else 1
            if used + units > limit:
                break
            used += units
            cut += 1
            if text[cut - 1].isspace():
                after_space = cut
        if cut < end and after_space - start > (cut - start) // 2:
            cut = after_space
        parts.append(text[start:cut])
        start = cut
    return parts


def channel_parts(kind: str, text: str) -> list[str]:
    """The messages a channel of ``kind`` sends for ``text`` (:data:`TEXT_LIMITS`)."""
    limit = TEXT_LIMITS.get(kind)
    return [text] if limit is None else split_text(text, limit)


def reply_request(
    channel: Channel, to: str, text: str
) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """A platform's request that sends ``text`` to ``to``: URL, headers, JSON body (the
    generic channel's headers are its signature's, added by the sender)."""
    if channel.kind == "whatsapp":
        url = f"{channel.api_url}/{channel.api_version}/{channel.phone_number_id}/messages"
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": False, "body": text},
        }
        return url, [("Authorization", f"Bearer {channel.token}")], body
    if channel.kind == "telegram":
        chat: int | str = int(to) if to.lstrip("-").isdigit() else to
        return (
            f"{channel.api_url}/bot{channel.token}/sendMessage",
            [],
            {"chat_id": chat, "text": text},
        )
    assert channel.reply_url is not None
    return (
        channel.reply_url,
        [],
        {"type": "message", "channel_id": channel.id, "to": to, "text": text},
    )


#: Files a platform shows as a picture (WhatsApp's ``image`` takes JPEG and PNG; so does
#: Telegram's ``sendPhoto``); any other file goes as a document.
PHOTO_TYPES = frozenset({"image/jpeg", "image/png"})


def media_request(
    channel: Channel, to: str, content_type: str, link: str, name: str, caption: str = ""
) -> tuple[str, list[tuple[str, str]], dict[str, Any]] | None:
    """The platform's request that sends the file at ``link`` (a URL the platform fetches) to
    ``to``: WhatsApp's ``image`` / ``document`` message, Telegram's ``sendPhoto`` /
    ``sendDocument``. None for a channel without media messages (the generic one)."""
    photo = content_type in PHOTO_TYPES
    if channel.kind == "whatsapp":
        url = f"{channel.api_url}/{channel.api_version}/{channel.phone_number_id}/messages"
        media: dict[str, Any] = {"link": link}
        if not photo:
            media["filename"] = name
        if caption:
            media["caption"] = caption
        kind = "image" if photo else "document"
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
            kind: media,
        }
        return url, [("Authorization", f"Bearer {channel.token}")], body
    if channel.kind == "telegram":
        chat: int | str = int(to) if to.lstrip("-").isdigit() else to
        method, field = ("sendPhoto", "photo") if photo else ("sendDocument", "document")
        sent: dict[str, Any] = {"chat_id": chat, field: link}
        if caption:
            sent["caption"] = caption
        return f"{channel.api_url}/bot{channel.token}/{method}", [], sent
    return None
