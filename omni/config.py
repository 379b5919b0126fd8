"""Configuration: the resources an administrator edits, and how they become a Directory.

Rules of this module:

* Each configurable thing has one msgspec struct — the *body* — used alike by the TOML file
  (``omni import-config``), by the admin API (request and response bodies, and their OpenAPI
  schemas) and by the store (bodies are kept as JSON). :data:`RESOURCES` lists them.
* Secrets never stay in a body: an operator's console token and an API token are replaced by
  their SHA-256 (``token_hash``) before anything is stored, and never returned.
* :func:`build_directory` turns bodies into the domain's immutable
  :class:`~omni.domain.model.Directory`, whose own checks (schedules, links, references) run
  too. Every problem is a :class:`ConfigError` (or ``ValueError``) that names the resource and
  the field — never a half-built configuration.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import msgspec

from omni.actors.hub import Settings
from omni.domain.model import (
    ApiToken,
    Avatar,
    Directory,
    Group,
    GroupLink,
    Operator,
    Palette,
    Parameters,
    QuestionKind,
    RequiredFields,
    Role,
    Service,
    SurveyMode,
    SurveyQuestion,
    Timers,
    hash_token,
)
from omni.domain.schedule import Interval, Schedule
from omni.store import ConfigItem

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Id = Annotated[int, msgspec.Meta(ge=1, le=2_147_483_647)]
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Text = Annotated[str, msgspec.Meta(max_length=4000)]
Colour = Annotated[str, msgspec.Meta(pattern=r"^#[0-9a-fA-F]{6}$")]
Span = Annotated[list[str], msgspec.Meta(min_length=2, max_length=2)]
Secret = Annotated[str, msgspec.Meta(min_length=8, max_length=200)]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ConfigError(Exception):
    pass


class _Struct(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    pass


class SmtpSection(_Struct):
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


class CaptchaSection(_Struct):
    """The CAPTCHA provider's verification endpoint (F19): reCAPTCHA, hCaptcha and Turnstile
    all speak the same "siteverify" protocol."""

    #: e.g. https://challenges.cloudflare.com/turnstile/v0/siteverify
    verify_url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s]+$", max_length=500)]
    secret: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    timeout: PositiveSeconds = 5.0


class ServerSection(_Struct):
    host: str = "127.0.0.1"
    ws_port: Port = 8765
    http_port: Port = 8080
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    operator_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    outbound_buffer: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 1024
    #: Origins allowed to call the admin API from a browser (CORS); none by default.
    cors_origins: list[str] = []
    #: E-mail (transcripts); none by default: transcripts are then not offered.
    smtp: SmtpSection | None = None
    #: CAPTCHA verification for services that ask for one (F19).
    captcha: CaptchaSection | None = None


# -- resource bodies ----------------------------------------------------------------------------


class SpecialDay(_Struct):
    date: date
    intervals: list[Span] = []


class ScheduleBody(_Struct):
    """Weekly opening hours in a time zone; gaps inside a day are breaks (F3)."""

    id: Key
    timezone: Name
    weekly: dict[str, list[Span]] = {}
    holidays: list[date] = []
    special_days: list[SpecialDay] = []


class GroupBody(_Struct):
    id: Id
    name: Name


class LinkBody(_Struct):
    group: Id
    schedule: Key | None = None


class AvatarBody(_Struct):
    name: Name
    image: Annotated[str, msgspec.Meta(max_length=2000)] = ""


class TimersBody(_Struct):
    offer_timeout: PositiveSeconds = 30.0
    survey_timeout: PositiveSeconds = 600.0
    queue_timeout: PositiveSeconds | None = None
    visitor_idle_warning: PositiveSeconds | None = None
    visitor_idle_close: PositiveSeconds | None = None
    operator_reply: PositiveSeconds | None = None


class QuestionBody(_Struct):
    id: Key
    kind: QuestionKind
    label: Name
    required: bool = False
    min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    options: list[Name] = []
    max_length: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 2000


class RequiredFieldsBody(_Struct):
    email: bool = False
    phone: bool = False


class ServiceBody(_Struct):
    """A chat service (F1) and everything the visitor meets in it."""

    id: Id
    name: Name
    links: Annotated[list[LinkBody], msgspec.Meta(min_length=1)]
    schedule: Key | None = None
    greeting: Text = "Hello! How can I help you?"
    out_of_hours_message: Text = (
        "We are closed right now. Leave a message and we will get back to you."
    )
    closing_message: Text = "Thank you for contacting us."
    avatar: AvatarBody | None = None
    survey: SurveyMode = SurveyMode.DEFAULT
    survey_questions: list[QuestionBody] = []
    transcript_email: bool = True
    timers: TimersBody = msgspec.field(default_factory=TimersBody)
    required_fields: RequiredFieldsBody = msgspec.field(default_factory=RequiredFieldsBody)
    allowed_origins: list[Annotated[str, msgspec.Meta(max_length=300)]] = []
    #: A visitor must pass a CAPTCHA (checked with ``[server.captcha]``) to start (F19).
    captcha: bool = False
    #: The key the embedding site signs visitors' identities with (F8, JWT HS256). Write-only:
    #: never returned; left out of a PUT, the stored one is kept; ``null`` removes it.
    identity_secret: (
        Annotated[str, msgspec.Meta(min_length=32, max_length=500)] | msgspec.UnsetType | None
    ) = msgspec.UNSET


class OperatorBody(_Struct):
    """An operator. ``token`` (the console sign-in secret) is write-only: required on
    creation, kept when omitted on update, stored only as its hash, never returned."""

    id: Id
    name: Name
    groups: list[Id]
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    active: bool = True
    token: Secret | None = None
    token_hash: str | None = None


class PaletteBody(_Struct):
    button: Colour = "#0b5fff"
    header: Colour = "#0b5fff"
    panels: Colour = "#ffffff"
    visitor_bubble: Colour = "#e8f0ff"
    operator_bubble: Colour = "#f1f1f1"


class AttachmentsBody(_Struct):
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=1024 * 1024 * 1024)] = 10 * 1024 * 1024
    types: list[Annotated[str, msgspec.Meta(max_length=100)]] = msgspec.field(
        default_factory=lambda: ["image/png", "image/jpeg", "application/pdf"]
    )
    folder: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] = "attachments"


class ParametersBody(_Struct):
    """Installation-wide settings: the widget's look (F6) and identification policy (F7)."""

    palette: PaletteBody = msgspec.field(default_factory=PaletteBody)
    logo: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    all_fields_required: bool = False
    attachments: AttachmentsBody = msgspec.field(default_factory=AttachmentsBody)


class ApiTokenBody(_Struct):
    """An API token: ``token`` is given on creation only; ``token_hash`` is what is kept.
    An ``operator`` token names the operator it acts for (``operator_id``)."""

    id: Key
    name: Name
    role: Role
    operator_id: Id | None = None
    token: Secret | None = None
    token_hash: str | None = None


def check_api_token(body: dict[str, Any]) -> None:
    """What a new or changed API token must satisfy beyond its schema (``ValueError``): an
    operator token is tied to an operator. (Tokens stored before ``operator_id`` existed still
    load; the API refuses them until an admin ties them, see ``admin_api.http``.)"""
    if body.get("role") == Role.OPERATOR.value and body.get("operator_id") is None:
        raise ValueError(
            f"api token {body.get('id')}: an operator token needs operator_id "
            "(the operator it acts for)"
        )


class ConfigFile(_Struct):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    schedules: list[ScheduleBody] = []
    groups: list[GroupBody] = []
    services: list[ServiceBody] = []
    operators: list[OperatorBody] = []
    parameters: ParametersBody | None = None
    api_tokens: list[ApiTokenBody] = []


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    kind: str
    body: type[_Struct]
    #: The body field that is the resource's id (None: a singleton, key "default").
    key_field: str | None
    key_type: type


RESOURCES: dict[str, Resource] = {
    r.kind: r
    for r in (
        Resource("schedules", ScheduleBody, "id", str),
        Resource("groups", GroupBody, "id", int),
        Resource("services", ServiceBody, "id", int),
        Resource("operators", OperatorBody, "id", int),
        Resource("parameters", ParametersBody, None, str),
        Resource("api_tokens", ApiTokenBody, "id", str),
    )
}


def item_key(resource: Resource, body: _Struct) -> str:
    return "default" if resource.key_field is None else str(getattr(body, resource.key_field))


def seal(body: _Struct) -> _Struct:
    """Replace a clear ``token`` by its hash (operators, API tokens)."""
    if isinstance(body, OperatorBody | ApiTokenBody) and body.token is not None:
        return msgspec.structs.replace(body, token=None, token_hash=hash_token(body.token))
    return body


def to_item(resource: Resource, body: _Struct) -> ConfigItem:
    sealed = seal(body)
    return ConfigItem(resource.kind, item_key(resource, sealed), msgspec.to_builtins(sealed))


def parse_body(resource: Resource, raw: Any) -> _Struct:
    body: _Struct = msgspec.convert(raw, resource.body)
    return body


# -- the file -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    server: ServerSection
    items: list[ConfigItem]
    directory: Directory

    def settings(self) -> Settings:
        return Settings(
            max_frame_bytes=self.server.max_frame_bytes,
            operator_grace=self.server.operator_grace_seconds,
            outbound_buffer=self.server.outbound_buffer,
        )


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_config(raw: dict[str, Any]) -> Config:
    try:
        file = msgspec.convert(raw, ConfigFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(str(exc)) from None
    smtp = file.server.smtp
    if smtp is not None and smtp.username is not None and not smtp.starttls:
        raise ConfigError(
            "$.server.smtp: a username needs starttls = true (credentials never go in clear)"
        )
    items: list[ConfigItem] = []
    try:
        for kind in ("schedules", "groups", "services", "operators", "api_tokens"):
            bodies: list[_Struct] = getattr(file, kind)
            keys = [item_key(RESOURCES[kind], b) for b in bodies]
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise ValueError(f"$.{kind}: duplicate id(s) {', '.join(duplicates)}")
            for index, body in enumerate(bodies):
                if isinstance(body, OperatorBody | ApiTokenBody) and body.token is None:
                    raise ValueError(f"$.{kind}[{index}]: a token is required")
                item = to_item(RESOURCES[kind], body)
                if kind == "api_tokens":
                    check_api_token(item.body)
                items.append(item)
        if file.parameters is not None:
            items.append(to_item(RESOURCES["parameters"], file.parameters))
        hashes = [i.body["token_hash"] for i in items if i.kind == "operators"]
        if len(set(hashes)) != len(hashes):
            raise ValueError("$.operators: two operators share a token")
        return Config(server=file.server, items=items, directory=build_directory(items))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# -- bodies -> Directory ------------------------------------------------------------------------


def build_directory(items: Iterable[ConfigItem]) -> Directory:
    """The Directory of these items; ``ValueError`` naming the resource when they don't fit."""
    by_kind: dict[str, list[Any]] = {kind: [] for kind in RESOURCES}
    for item in items:
        resource = RESOURCES[item.kind]
        try:
            by_kind[item.kind].append(parse_body(resource, item.body))
        except msgspec.ValidationError as exc:
            raise ValueError(f"{item.kind} {item.key}: {exc}") from None
    parameters: list[ParametersBody] = by_kind["parameters"]
    return Directory(
        schedules={s.id: _schedule(s) for s in by_kind["schedules"]},
        groups={g.id: Group(g.id, g.name) for g in by_kind["groups"]},
        services={s.id: _service(s) for s in by_kind["services"]},
        operators={o.id: _operator(o) for o in by_kind["operators"]},
        parameters=_parameters(parameters[0]) if parameters else Parameters(),
        api_tokens={t.id: _api_token(t) for t in by_kind["api_tokens"]},
    )


def _intervals(spans: list[list[str]], where: str) -> tuple[Interval, ...]:
    try:
        return tuple(Interval.parse(start, end) for start, end in spans)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _schedule(body: ScheduleBody) -> Schedule:
    where = f"schedule {body.id!r}"
    weekly: dict[int, tuple[Interval, ...]] = {}
    for day, spans in body.weekly.items():
        if day not in WEEKDAYS:
            raise ValueError(f"{where}.weekly: unknown day {day!r} (use {', '.join(WEEKDAYS)})")
        weekly[WEEKDAYS.index(day)] = _intervals(spans, f"{where}.weekly.{day}")
    special = {
        s.date: _intervals(s.intervals, f"{where}.special_days[{i}]")
        for i, s in enumerate(body.special_days)
    }
    try:
        return Schedule(
            timezone=body.timezone,
            weekly=weekly,
            holidays=frozenset(body.holidays),
            special_days=special,
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _question(body: QuestionBody, where: str) -> SurveyQuestion:
    if body.kind in (QuestionKind.RATING, QuestionKind.SCALE) and body.min >= body.max:
        raise ValueError(f"{where}: min must be below max")
    if body.kind == QuestionKind.CHOICE and len(body.options) < 2:
        raise ValueError(f"{where}: a choice needs at least two options")
    return SurveyQuestion(
        id=body.id,
        kind=body.kind.value,
        label=body.label,
        required=body.required,
        minimum=body.min,
        maximum=body.max,
        max_length=body.max_length,
        options=tuple(body.options),
    )


def service_from_body(body: dict[str, Any]) -> Service:
    """A stored service body as a Service (``ValueError`` if it does not fit)."""
    try:
        parsed = parse_body(RESOURCES["services"], body)
    except msgspec.ValidationError as exc:
        raise ValueError(f"service: {exc}") from None
    assert isinstance(parsed, ServiceBody)
    return _service(parsed)


def _service(body: ServiceBody) -> Service:
    where = f"service {body.id}"
    questions = tuple(
        _question(q, f"{where}.survey_questions[{i}]") for i, q in enumerate(body.survey_questions)
    )
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}.survey_questions: duplicate question ids")
    if body.survey is SurveyMode.CUSTOM and not questions:
        raise ValueError(f"{where}: a custom survey needs at least one question")
    groups = [link.group for link in body.links]
    if len(set(groups)) != len(groups):
        raise ValueError(f"{where}.links: a group is linked twice")
    t = body.timers
    if (
        t.visitor_idle_warning is not None
        and t.visitor_idle_close is not None
        and t.visitor_idle_close <= t.visitor_idle_warning
    ):
        raise ValueError(
            f"{where}.timers: visitor_idle_close must be longer than visitor_idle_warning "
            "(both count from the operator's last message)"
        )
    return Service(
        id=body.id,
        name=body.name,
        links=tuple(GroupLink(link.group, link.schedule) for link in body.links),
        schedule_id=body.schedule,
        greeting=body.greeting,
        out_of_hours_message=body.out_of_hours_message,
        closing_message=body.closing_message,
        avatar=Avatar(body.avatar.name, body.avatar.image) if body.avatar else Avatar(body.name),
        survey=body.survey,
        timers=Timers(
            offer_timeout=t.offer_timeout,
            survey_timeout=t.survey_timeout,
            queue_timeout=t.queue_timeout,
            visitor_idle_warning=t.visitor_idle_warning,
            visitor_idle_close=t.visitor_idle_close,
            operator_reply=t.operator_reply,
        ),
        custom_survey=questions,
        transcript_email=body.transcript_email,
        required_fields=RequiredFields(body.required_fields.email, body.required_fields.phone),
        allowed_origins=tuple(body.allowed_origins),
        identity_secret=body.identity_secret if isinstance(body.identity_secret, str) else None,
        captcha=body.captcha,
    )


def _operator(body: OperatorBody) -> Operator:
    if body.token_hash is None:
        raise ValueError(f"operator {body.id}: no token")
    return Operator(
        id=body.id,
        name=body.name,
        groups=tuple(body.groups),
        capacity=body.capacity,
        token_hash=body.token_hash,
        active=body.active,
    )


def _parameters(body: ParametersBody) -> Parameters:
    p = body.palette
    return Parameters(
        palette=Palette(p.button, p.header, p.panels, p.visitor_bubble, p.operator_bubble),
        logo=body.logo,
        all_fields_required=body.all_fields_required,
        attachment_max_bytes=body.attachments.max_bytes,
        attachment_types=tuple(body.attachments.types),
        attachment_folder=body.attachments.folder,
    )


def _api_token(body: ApiTokenBody) -> ApiToken:
    if body.token_hash is None:
        raise ValueError(f"api token {body.id}: no token")
    return ApiToken(body.id, body.name, body.role, body.token_hash, body.operator_id)
