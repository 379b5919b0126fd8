"""Who may start a conversation, and as whom (F7, F8, F18): the rules of the door.

Rules: pure (no I/O, no clock). The caller asks, in this order: the page's origin
(:func:`check_origin`), then — after any CAPTCHA, which needs the network — who the visitor is
(:func:`identify`). A refusal is a :class:`~omni.domain.protocol.Rejected` with a stable code;
nothing has been created when it is raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from omni.domain.model import Directory, Parameters, Service
from omni.domain.protocol import Rejected, Visitor, VisitorInfo


def check_origin(service: Service, origin: str | None) -> None:
    """F18: a browser page may start a chat only from one of the service's allowed origins."""
    if not service.accepts_origin(origin):
        raise Rejected(
            "origin_not_allowed", f"service {service.id} may not be embedded on {origin}"
        )


def identify(
    service: Service,
    parameters: Parameters,
    typed: VisitorInfo | None,
    signed: Mapping[str, str] | None = None,
) -> Visitor:
    """The visitor of a new conversation (F7, F8).

    ``signed`` holds the claims of a verified identity (``name``, ``email``, ``phone``): they
    replace whatever was typed, the typed ``fields`` stay, and the visitor is ``verified``. The
    name is always required; e-mail and phone as the service (or the installation, with
    ``all_fields_required``) says."""
    fields = typed.fields if typed is not None else {}
    if signed is not None:
        visitor = Visitor(
            name=signed["name"],
            email=signed.get("email"),
            phone=signed.get("phone"),
            fields=fields,
            verified=True,
        )
    elif typed is not None:
        visitor = Visitor(typed.name, typed.email, typed.phone, fields)
    else:
        raise Rejected("invalid_frame", "visitor.name is required")
    if not visitor.name.strip():
        raise Rejected("invalid_frame", "visitor.name is required")
    every = parameters.all_fields_required
    for name, required in (
        ("email", every or service.required_fields.email),
        ("phone", every or service.required_fields.phone),
    ):
        if required and not (getattr(visitor, name) or "").strip():
            raise Rejected("invalid_frame", f"visitor.{name} is required by this service")
    return visitor


def ticket_year(directory: Directory, service: Service, now: datetime) -> int:
    """Tickets are numbered per year, the year of the service's own time zone."""
    return now.astimezone(ZoneInfo(directory.zone_of(service))).year


def ticket(year: int, number: int) -> str:
    """The visitor's ticket number (F10), e.g. ``2026-000123``."""
    return f"{year}-{number:06d}"
