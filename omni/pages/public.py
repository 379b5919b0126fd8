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
* The survey page's data (:func:`survey_page`) is for whoever holds the link: the service's
  name and colours, the conversation's ticket and the survey's questions — nothing of what was
  said, and nothing at all for a link the server did not sign.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import msgspec

from omni.domain import protocol as p
from omni.domain.conversation import LinkedSurvey, LinkSurvey
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
            Listed(s.id, s.name, s.shown_avatar(), directory.takes_visitors(s, now))
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
    is_open = directory.takes_visitors(service, now)
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


class SurveyService(msgspec.Struct, frozen=True):
    """The service a survey page speaks for."""

    name: str
    avatar: Avatar
    #: The installation's logo (a URL or a path; "" for none).
    logo: str
    palette: Palette
    #: ``default``: the questions are Omni's own, asked in the page's language.
    survey: SurveyMode


class SurveyPage(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the survey page shows (``/survey/{token}``, its ``data-survey``): where the survey
    stands, and, while it is ``open``, its questions."""

    state: LinkSurvey
    #: Absent for a link the server did not sign.
    service: SurveyService | None = None
    #: The conversation's ticket, which the visitor was shown (absent with ``service``).
    ticket: str | None = None
    #: The service's survey now, as the WebChat gets it in its ``survey`` frame.
    questions: tuple[p.Question, ...] = ()


def survey_page(found: LinkedSurvey, directory: Directory) -> SurveyPage:
    """The survey page's data for what its link leads to."""
    conv, service = found.conversation, found.service
    if conv is None or service is None:
        return SurveyPage("invalid")
    parameters = directory.parameters
    shown = SurveyService(
        service.name, service.shown_avatar(), parameters.logo, parameters.palette, service.survey
    )
    questions = tuple(map(p.Question.of, service.questions())) if found.state == "open" else ()
    return SurveyPage(found.state, shown, conv.ticket, questions)
