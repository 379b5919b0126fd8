"""The public, read-only view of the configuration: what the pages (and anyone) may know of
the services, without a token.

Rules of this module:

* Every field is named here, and built from the live :class:`~omni.domain.model.Directory` at
  each request, so an administrator's change shows on the next page load (F20). A field added
  to a service is not public until it is added here: no secret (identity secrets, the CAPTCHA
  secret, tokens) and no list of allowed origins is, or can become, public by accident.
* Pure: the instant and the server's settings are given.
* A non-public service (``public = false``) is left out of the list, but its configuration is
  given by id: the guide links a page to one service.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from omni.domain.model import (
    Avatar,
    Directory,
    Language,
    Palette,
    RequiredFields,
    Service,
    SurveyMode,
)
from omni.settings import CaptchaProvider, CaptchaSettings

#: Where the pages' websocket connects, under the public websocket base URL.
VISITOR_PATH = "/ws/visitor"


class Listed(msgspec.Struct, frozen=True):
    """A service as the list of ``/webchat`` shows it (F7: the visitor's choice)."""

    id: int
    name: str
    avatar: Avatar
    open: bool


class ServiceList(msgspec.Struct, frozen=True):
    #: The public services, by id.
    services: list[Listed]


class CaptchaWidget(msgspec.Struct, frozen=True):
    """The CAPTCHA the visitor must pass to start (F19). All three null: the service asks for
    one but this server cannot show it (its ``[server.captcha]`` lacks ``provider``,
    ``site_key`` and ``script_url``, or there is none): a start would be refused."""

    provider: CaptchaProvider | None
    site_key: str | None
    script_url: str | None


class AttachmentLimits(msgspec.Struct, frozen=True):
    """The files a service accepts, as the WebChat tells the visitor before they try."""

    max_bytes: int
    types: tuple[str, ...]


class ServiceConfig(msgspec.Struct, frozen=True):
    """Everything the WebChat needs to know of a service before the visitor starts."""

    id: int
    name: str
    avatar: Avatar
    #: The installation's logo (a URL or a path; "" for none).
    logo: str
    palette: Palette
    #: Which identification fields the visitor must fill in (the name always).
    required_fields: RequiredFields
    #: The service accepts signed identities (F8): the embedding page may pass one.
    identity: bool
    #: None: the service asks for no CAPTCHA.
    captcha: CaptchaWidget | None
    survey: SurveyMode
    #: The visitor may ask for the conversation by e-mail once it has ended (F14).
    transcript: bool
    #: A conversation started now reaches a group (else it is out of hours).
    open: bool
    #: When closed: the next instant it opens (UTC), or null when that is not within 400 days.
    opens_at: datetime | None
    #: The page's language setting (``auto``: the browser's).
    language: Language
    #: The websocket URL to start a conversation on.
    ws_url: str
    #: What the visitor may attach (F11): null when the service takes no files.
    attachments: AttachmentLimits | None = None


def service_list(directory: Directory, now: datetime) -> ServiceList:
    """The public services, ordered by id, and whether each is open at ``now``."""
    return ServiceList(
        [
            Listed(s.id, s.name, s.shown_avatar(), directory.route(s, now) is not None)
            for _, s in sorted(directory.services.items())
            if s.public
        ]
    )


def service_config(
    directory: Directory,
    service: Service,
    now: datetime,
    *,
    captcha: CaptchaSettings | None,
    mail: bool,
    ws_base: str,
    next_opening: Callable[[Service, datetime], datetime | None] | None = None,
) -> ServiceConfig:
    """The configuration of ``service`` for its WebChat at ``now``; ``captcha`` is the
    server's provider (if any), ``mail`` whether it can send e-mail, ``ws_base`` the public
    websocket base URL; ``next_opening`` answers as ``directory.next_opening`` (which it is
    by default), perhaps from a cache."""
    next_opening = next_opening or directory.next_opening
    parameters = directory.parameters
    required = (
        RequiredFields(email=True, phone=True)
        if parameters.all_fields_required
        else service.required_fields
    )
    is_open = directory.route(service, now) is not None
    return ServiceConfig(
        id=service.id,
        name=service.name,
        avatar=service.shown_avatar(),
        logo=parameters.logo,
        palette=parameters.palette,
        required_fields=required,
        identity=service.identity_secret is not None,
        captcha=captcha_widget(service, captcha),
        survey=service.survey,
        transcript=service.transcript_email and mail,
        open=is_open,
        opens_at=None if is_open else next_opening(service, now),
        language=service.language,
        ws_url=ws_base + VISITOR_PATH,
        attachments=_attachments(directory, service),
    )


def _attachments(directory: Directory, service: Service) -> AttachmentLimits | None:
    limits = directory.attachments_of(service)
    return AttachmentLimits(limits.max_bytes, limits.types) if limits.enabled else None


def captcha_widget(service: Service, settings: CaptchaSettings | None) -> CaptchaWidget | None:
    """The CAPTCHA ``service``'s page shows (see :class:`CaptchaWidget`)."""
    if not service.captcha:
        return None
    if settings is None or not settings.for_pages:
        return CaptchaWidget(None, None, None)
    return CaptchaWidget(settings.provider, settings.site_key, settings.script_url)
