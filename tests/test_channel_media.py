"""Channels' files, sans-IO (issue 17): what the platforms' payloads say of a file, and the
media messages a channel sends for an operator's file."""

from __future__ import annotations

import base64
from typing import Any

from omni.domain.channels import Media, media_request, parse_telegram, parse_whatsapp
from omni.domain.model import Channel

WA = Channel(
    id="wa",
    kind="whatsapp",
    service_id=25,
    base_url="https://graph.example",
    phone_number_id="1098765",
    api_version="v21.0",
    token="T",
    app_secret="s",
    verify_token="v",
)
SECRET = "whsec_" + base64.b64encode(b"0" * 32).decode()
TG = Channel(id="tg", kind="telegram", service_id=25, token="1:B", secret_token="x" * 16)


def wa(message: dict[str, object]) -> dict[str, object]:
    value = {"contacts": [], "messages": [{"from": "55", "id": "wamid.1", **message}]}
    return {"entry": [{"changes": [{"value": value}]}]}


def test_whatsapp_images_and_documents_say_where_the_file_is() -> None:
    [image] = parse_whatsapp(wa({"type": "image", "image": {"id": "M1", "caption": "olha"}}))
    assert image.media == Media("image", "M1", None, "olha")
    assert image.text == "[image] olha"  # what the message says when the file is not kept
    document = {"id": "M2", "filename": "nota.pdf"}
    [doc] = parse_whatsapp(wa({"type": "document", "document": document}))
    assert doc.media == Media("document", "M2", "nota.pdf", "")
    [video] = parse_whatsapp(wa({"type": "video", "video": {"id": "M3"}}))
    assert video.media is None and video.text == "[video]"
    [text] = parse_whatsapp(wa({"type": "text", "text": {"body": "oi"}}))
    assert text.media is None


def test_telegram_takes_the_largest_photo_and_the_document() -> None:
    base = {"chat": {"id": 7}, "from": {"first_name": "T"}}
    photo = [{"file_id": "small", "file_size": 10}, {"file_id": "large", "file_size": 99}]
    [got] = parse_telegram({"update_id": 1, "message": {**base, "photo": photo, "caption": "c"}})
    assert got.media == Media("image", "large", None, "c", 99)
    document = {"file_id": "D", "file_name": "a.pdf", "file_size": 5}
    [got] = parse_telegram({"update_id": 2, "message": {**base, "document": document}})
    assert got.media == Media("document", "D", "a.pdf", "", 5)


def request(*args: Any) -> tuple[str, list[tuple[str, str]], dict[str, Any]]:
    """The request, for a channel that has media messages."""
    found = media_request(*args)
    assert found is not None
    return found


def test_media_requests_follow_the_platforms() -> None:
    url, headers, body = request(WA, "55", "application/pdf", "https://o/f", "r.pdf")
    assert url == "https://graph.example/v21.0/1098765/messages"
    assert headers == [("Authorization", "Bearer T")]
    assert body["type"] == "document"
    assert body["document"] == {"link": "https://o/f", "filename": "r.pdf"}
    _, _, body = request(WA, "55", "image/png", "https://o/i", "i.png", "veja")
    assert body["type"] == "image" and body["image"] == {"link": "https://o/i", "caption": "veja"}
    url, _, body = request(TG, "7", "image/jpeg", "https://o/j", "j.jpg")
    assert url.endswith("/bot1:B/sendPhoto") and body == {"chat_id": 7, "photo": "https://o/j"}
    url, _, body = request(TG, "7", "application/zip", "https://o/z", "z.zip")
    assert url.endswith("/bot1:B/sendDocument") and body == {
        "chat_id": 7,
        "document": "https://o/z",
    }
    generic = Channel(id="g", kind="generic", service_id=25, reply_url="https://x", secret=SECRET)
    assert media_request(generic, "u", "image/png", "https://o/i", "i.png") is None
