"""The server's own settings: the ``[server]`` table of the configuration file.

Rules: these are values, not behaviour — msgspec structs with one default and one check per
field, decoded with the rest of the file by ``omni.config``. Each part of the server takes the
section it needs (the gateway its limits, the outbox the SMTP section, the CAPTCHA check its
provider), so none of them depends on the file's format. Unlike the configuration resources
(``omni.domain.model``), they are not edited live: they need a restart.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]


class _Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class SmtpSettings(_Settings, frozen=True):
    """Where e-mail goes (F14: transcripts): an SMTP server, and how hard to try."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    #: The From address of every e-mail.
    sender: Annotated[str, msgspec.Meta(pattern=r"^[^@\s]+@[^@\s]+$", max_length=320)]
    port: Port = 25
    username: Annotated[str, msgspec.Meta(max_length=320)] | None = None
    password: Annotated[str, msgspec.Meta(max_length=1000)] | None = None
    #: Upgrade the connection with STARTTLS before anything is sent (required with a login).
    starttls: bool = False
    timeout: PositiveSeconds = 30.0
    #: First wait after a failed attempt; it doubles with each attempt, up to an hour.
    retry_seconds: PositiveSeconds = 30.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8

    def __post_init__(self) -> None:
        if self.username is not None and not self.starttls:
            raise ValueError("a username needs starttls = true (credentials never go in clear)")

    def __repr__(self) -> str:
        return f"SmtpSettings(host={self.host!r}, port={self.port})"


class CaptchaSettings(_Settings, frozen=True):
    """The CAPTCHA provider's verification endpoint (F19): reCAPTCHA, hCaptcha and Turnstile
    all speak the same "siteverify" protocol."""

    #: e.g. https://challenges.cloudflare.com/turnstile/v0/siteverify
    verify_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=500)]
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    timeout: PositiveSeconds = 5.0

    def __repr__(self) -> str:
        return f"CaptchaSettings(verify_url={self.verify_url!r})"


class ServerSettings(_Settings, frozen=True):
    host: str = "127.0.0.1"
    ws_port: Port = 8765
    http_port: Port = 8080
    #: Largest accepted websocket frame, in UTF-8 bytes; larger ones get ``frame_too_large``.
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    #: How long a disconnected operator keeps their conversations before they are requeued.
    operator_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    #: Frames buffered for one client before it is considered too slow and disconnected.
    outbound_buffer: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 1024
    #: Origins allowed to call the admin API from a browser (CORS); none by default.
    cors_origins: tuple[str, ...] = ()
    #: E-mail (transcripts); none by default: transcripts are then not offered.
    smtp: SmtpSettings | None = None
    #: CAPTCHA verification for services that ask for one (F19).
    captcha: CaptchaSettings | None = None
