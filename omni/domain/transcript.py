"""The transcript e-mailed to a visitor (F14): what the visitor saw, as plain text.

Rules: pure (no I/O, no clock). The caller gives the conversation, its service, the stored
frames in ``seq`` order and the time zone to show times in; the result is the subject and body
of one e-mail. Only what the visitor was shown goes in: messages of both sides (the greeting
included) and transfers; nothing meant for the operator alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from omni.domain.conversation import Conversation
from omni.domain.model import Service

#: Longest address accepted (RFC 5321: 254 characters in a path).
MAX_EMAIL = 254


@dataclass(frozen=True, slots=True)
class Transcript:
    subject: str
    body: str


def valid_email(address: str) -> bool:
    """A plausible single mailbox: one ``@``, something on each side, a dot in the domain, no
    spaces, commas, angle brackets or line breaks (nothing that could add a recipient or a
    header)."""
    if not 3 <= len(address) <= MAX_EMAIL or address.count("@") != 1:
        return False
    if any(c.isspace() or c in ',;<>"()[]\\' for c in address):
        return False
    local, domain = address.split("@")
    return bool(local) and "." in domain.strip(".") and not domain.startswith(".")


def render(
    conv: Conversation, service: Service, frames: Iterable[dict[str, Any]], zone: ZoneInfo
) -> Transcript:
    def when(at: str) -> str:
        return datetime.fromisoformat(at).astimezone(zone).strftime("%Y-%m-%d %H:%M")

    lines = [
        f"{service.name} — conversation {conv.ticket}",
        f"Started {when(conv.created_at)} ({zone.key})",
        "",
    ]
    for frame in frames:
        if frame.get("type") == "message":
            author = frame.get("author", {})
            name = author.get("name") or ("You" if author.get("kind") == "visitor" else "Agent")
            text = str(frame.get("text", "")).replace("\r\n", "\n").replace("\n", "\n    ")
            lines.append(f"[{when(frame['at'])}] {name}: {text}")
        elif frame.get("type") == "transferred":
            target = frame.get("to", {}).get("name") or "another agent"
            lines.append(f"— transferred to {target} —")
    if service.closing_message:
        lines += ["", service.closing_message]
    return Transcript(
        f"Your conversation {conv.ticket} with {service.name}", "\n".join(lines) + "\n"
    )
