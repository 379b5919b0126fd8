"""The transcript e-mailed to a visitor (F14): who may ask for it, and what it says.

Rules: pure (no I/O, no clock).

* :func:`check_request` is the whole rule of asking: the conversation must have ended with an
  operator, its service must send transcripts, the address must be one plain mailbox, and a
  conversation's transcript goes to at most :data:`MAX_TRANSCRIPTS` addresses (asking again for
  the same address, in any letter case, queues nothing more).
* :func:`render` turns what the visitor was shown — messages of both sides (the greeting
  included) and transfers, in ``seq`` order, nothing meant for the operator alone — into the
  subject and body of one e-mail, with times in the given zone.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from omni.domain import protocol as p
from omni.domain.conversation import Conversation
from omni.domain.model import Service
from omni.domain.protocol import Rejected, Status

#: Longest address accepted (RFC 5321: 254 characters in a path).
MAX_EMAIL = 254
#: Addresses one conversation's transcript may be sent to: enough for a visitor, too few to
#: make the server a way to send mail to anyone.
MAX_TRANSCRIPTS = 3


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


def outbox_key(conv: Conversation, email: str) -> str:
    """The outbox's key of this transcript: one e-mail per conversation and address."""
    return f"transcript:{conv.id}:{email.lower()}"


def check_request(
    conv: Conversation, service: Service, email: str, queued: Collection[str]
) -> str | None:
    """Whether ``email`` may get ``conv``'s transcript; ``queued`` holds the outbox keys of the
    transcripts already queued for it. The key to queue, or None when this address already has
    it; :class:`Rejected` otherwise."""
    if not valid_email(email):
        raise Rejected("invalid_email", f"not an e-mail address: {email[:80]!r}")
    if not service.transcript_email:
        raise Rejected("transcript_disabled", "this service does not send transcripts")
    if conv.status not in (Status.ENDED, Status.CLOSED):
        raise Rejected(
            "invalid_state",
            "the transcript is offered once the conversation has ended with an operator",
        )
    key = outbox_key(conv, email)
    if key in queued:
        return None
    if len(queued) >= MAX_TRANSCRIPTS:
        raise Rejected(
            "too_many_transcripts",
            f"a conversation's transcript goes to {MAX_TRANSCRIPTS} addresses at most",
        )
    return key


def render(
    conv: Conversation,
    service: Service,
    events: Iterable[p.Event],
    zone: ZoneInfo,
    link: Callable[[str], str | None] | None = None,
) -> Transcript:
    """The e-mail of what the visitor saw (``events``: the stored history, in ``seq`` order);
    ``link(attachment_id)``: a download link for a file a message carries, if there is one."""

    def when(event: p.Message | p.BotSays | p.BotAnswered | Conversation) -> str:
        at = event.created_at if isinstance(event, Conversation) else event.at
        return at.astimezone(zone).strftime("%Y-%m-%d %H:%M")

    lines = [
        f"{service.name} — conversation {conv.ticket}",
        f"Started {when(conv)} ({zone.key})",
        "",
    ]
    if conv.bot is not None and conv.bot.fields:
        # What the chatbot collected (F15), as the operator saw it.
        lines += [
            "Details you gave:",
            *(f"    {name}: {value}" for name, value in sorted(conv.bot.fields.items())),
            "",
        ]
    bot_name = service.shown_avatar().name
    for event in events:
        if isinstance(event, p.BotSays):
            lines.append(f"[{when(event)}] {bot_name}: {_indent(event.text)}")
        elif isinstance(event, p.BotAnswered):
            lines.append(f"[{when(event)}] {event.author.name or 'You'}: {_indent(event.text)}")
        elif isinstance(event, p.Message):
            author = event.author
            name = author.name or ("You" if author.kind == "visitor" else "Agent")
            if event.attachment is not None:
                # The file, and a link to it while links last (a signed one: the e-mail
                # outlives it, so the file's name and size are there either way).
                url = link(event.attachment.id) if link is not None else None
                text = f"[file: {event.attachment.name}, {_size(event.attachment.size)}]"
                if url:
                    text += f" {url}"
            else:
                text = _indent(event.text)
            lines.append(f"[{when(event)}] {name}: {text}")
        elif isinstance(event, p.Transferred):
            lines.append(f"— transferred to {event.to.name or 'another agent'} —")
    if service.closing_message:
        lines += ["", service.closing_message]
    return Transcript(
        f"Your conversation {conv.ticket} with {service.name}", "\n".join(lines) + "\n"
    )


def _indent(text: str) -> str:
    """A text's further lines indented under its first."""
    return text.replace("\r\n", "\n").replace("\n", "\n    ")


def _size(size: int) -> str:
    """A file's size for people: bytes, kB or MB (decimal, one decimal place)."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"
