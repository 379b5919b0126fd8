"""Configuration entities: services, groups, their links, operators, API tokens, parameters, and
the directory that holds them all.

Rules of this module:

* Each configurable thing is **one type**: a frozen msgspec struct whose fields are the wire
  names. The TOML file's tables, the admin API's bodies, the JSON the store keeps and the
  object the rules read are the same struct, with one default and one check per field
  (constraints in :mod:`omni.domain.values`, cross-field checks in ``__post_init__``, which
  msgspec reports with the field's path).
* Everything is immutable. A configuration change builds a new :class:`Directory`; actors
  read the directory they are given and never mutate it, so a change can be applied live by
  swapping one reference.
* Secrets never stay in clear: an operator's console token and an API token are kept as
  their SHA-256 (``token_hash``), a person's password as its argon2id hash (``password_hash``,
  made and checked off the event loop by ``omni.accounts``, never here). The clear token
  exists only in what an administrator sends (``omni.config``'s input types), and a
  service's identity secret is never shown (repr).
* No I/O and no clock: whether something is open is asked with an explicit instant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from omni.domain.attachments import KNOWN_TYPES
from omni.domain.bot import Bot
from omni.domain.schedule import LOOKAHEAD, Schedule
from omni.domain.values import Colour, Id, ImageRef, Key, Name, Origin, Seconds, SigningKey, Text

_T = TypeVar("_T")

#: The largest file a service may accept (``Attachments.max_bytes``).
MAX_ATTACHMENT_BYTES = 1024 * 1024 * 1024


class _Entity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class SurveyMode(StrEnum):
    NONE = "none"
    DEFAULT = "default"
    CUSTOM = "custom"


class QuestionKind(StrEnum):
    RATING = "rating"  # whole number min..max (stars)
    SCALE = "scale"  # whole number min..max (e.g. 0-10 recommendation)
    CHOICE = "choice"  # one of ``options``
    TEXT = "text"  # free text up to max_length


class SurveyQuestion(_Entity, frozen=True):
    """One question of a satisfaction survey (F13)."""

    id: Key
    kind: QuestionKind
    label: Name
    required: bool = False
    min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    max: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    options: tuple[Name, ...] = ()
    max_length: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 2000

    def __post_init__(self) -> None:
        if self.kind in (QuestionKind.RATING, QuestionKind.SCALE) and self.min >= self.max:
            raise ValueError(f"question {self.id!r}: min must be below max")
        if self.kind is QuestionKind.CHOICE and len(self.options) < 2:
            raise ValueError(f"question {self.id!r}: a choice needs at least two options")


#: The default survey of the reference product: a 1-5 rating and a free comment, both skippable.
DEFAULT_SURVEY: tuple[SurveyQuestion, ...] = (
    SurveyQuestion(
        id="rating", kind=QuestionKind.RATING, label="How would you rate this conversation?"
    ),
    SurveyQuestion(
        id="comment", kind=QuestionKind.TEXT, label="Anything you would like to tell us?"
    ),
)


class Avatar(_Entity, frozen=True):
    """How the service presents itself to the visitor (F6)."""

    name: Name
    image: ImageRef = ""


class Timers(_Entity, frozen=True):
    """Per-service deadlines, in seconds (F16). ``None``: no deadline."""

    #: How long an operator has to accept an offer before it goes to somebody else.
    offer_timeout: Seconds = 30.0
    #: How long a survey waits for the visitor before the conversation is closed without it.
    survey_timeout: Seconds = 600.0
    #: How long after the conversation ended its survey may still be answered by link (the
    #: survey page, ``/survey/{token}``): the link stops working then.
    survey_link_timeout: Seconds = 7 * 86_400.0
    #: How long a visitor may wait in the queue before the conversation is abandoned.
    queue_timeout: Seconds | None = None
    #: Visitor silence before a warning, and before the conversation is closed.
    visitor_idle_warning: Seconds | None = None
    visitor_idle_close: Seconds | None = None
    #: How long an operator may leave a visitor's message unanswered.
    operator_reply: Seconds | None = None

    def __post_init__(self) -> None:
        warning, close = self.visitor_idle_warning, self.visitor_idle_close
        if warning is not None and close is not None and close <= warning:
            raise ValueError(
                "visitor_idle_close must be longer than visitor_idle_warning "
                "(both count from the operator's last message)"
            )


class RequiredFields(_Entity, frozen=True):
    """Which identification fields the visitor must fill in (F7); the name always."""

    email: bool = False
    phone: bool = False


#: The languages of the pages; ``auto``: the visitor's browser's (pt-BR or English).
Language = Literal["auto", "pt-BR", "en"]


class GroupLink(_Entity, frozen=True):
    """A service's link to an operator group; an optional schedule of its own (F2, F5)."""

    group: Id
    schedule: Key | None = None


class Service(_Entity, frozen=True):
    """A chat service (F1) and everything the visitor meets in it."""

    id: Id
    name: Name
    #: The groups that answer it, in priority order (the first open one takes a new visitor).
    links: Annotated[tuple[GroupLink, ...], msgspec.Meta(min_length=1)]
    schedule: Key | None = None
    greeting: Text = "Hello! How can I help you?"
    out_of_hours_message: Text = (
        "We are closed right now. Leave a message and we will get back to you."
    )
    closing_message: Text = "Thank you for contacting us."
    #: None: the service's name, with no image.
    avatar: Avatar | None = None
    survey: SurveyMode = SurveyMode.DEFAULT
    #: The questions of a ``custom`` survey.
    survey_questions: tuple[SurveyQuestion, ...] = ()
    #: The closing message carries a link to the survey page (``survey_link_message``), for
    #: channels that cannot show the survey themselves (messaging apps).
    survey_link: bool = False
    #: What follows the closing message when it carries the survey's link; ``{link}`` is
    #: replaced by the link.
    survey_link_message: Text = "How did we do? Tell us here: {link}"
    transcript_email: bool = True
    timers: Timers = msgspec.field(default_factory=Timers)
    required_fields: RequiredFields = msgspec.field(default_factory=RequiredFields)
    #: Origins of the pages that may embed this service's chat (F18); none: any page.
    allowed_origins: tuple[Origin, ...] = ()
    #: A visitor must pass a CAPTCHA (checked with ``[server.captcha]``) to start (F19).
    captcha: bool = False
    #: The key the embedding site signs visitors' identities with (F8, JWT HS256); None: it
    #: accepts none. Write-only in the API; never in a repr.
    identity_secret: SigningKey | None = None
    #: The language of the service's WebChat page; ``auto``: the visitor's browser's.
    language: Language = "auto"
    #: Listed on ``/webchat`` without a service (the visitor's choice, F7); a service that is
    #: not is still reachable by its id (``/webchat?service=ID``).
    public: bool = True
    #: The service's own attachment limits (F11); None: the installation's
    #: (``parameters.attachments``).
    attachments: Attachments | None = None
    #: The chatbot that talks to a visitor before any person (F15): a bot's id, or None.
    bot: Key | None = None
    #: Every question of the bot offers "talk to a person" (the bot's ``person_label``).
    bot_person: bool = True
    #: What the bot says when it hands off to a group its schedule keeps closed (F5); the
    #: visitor also sees when the group opens, and goes back to the bot's last question.
    group_closed_message: Text = (
        "This team is not available right now. You can choose something else."
    )

    def __post_init__(self) -> None:
        ids = [q.id for q in self.survey_questions]
        if (twice := _repeated(ids)) is not None:
            raise ValueError(f"service {self.id}: survey_questions: id {twice!r} is used twice")
        if self.survey is SurveyMode.CUSTOM and not self.survey_questions:
            raise ValueError(f"service {self.id}: a custom survey needs at least one question")
        if "{link}" not in self.survey_link_message:
            raise ValueError(f"service {self.id}: survey_link_message must contain {{link}}")
        if (group := _repeated([link.group for link in self.links])) is not None:
            raise ValueError(f"service {self.id}: links: group {group} is linked twice")

    def __repr__(self) -> str:
        return f"Service(id={self.id}, name={self.name!r})"

    def questions(self) -> tuple[SurveyQuestion, ...]:
        """The survey a visitor gets at the end (none, the default one, or the custom one)."""
        if self.survey is SurveyMode.DEFAULT:
            return DEFAULT_SURVEY
        if self.survey is SurveyMode.CUSTOM:
            return self.survey_questions
        return ()

    def shown_avatar(self) -> Avatar:
        return self.avatar if self.avatar is not None else Avatar(name=self.name)

    def accepts_origin(self, origin: str | None) -> bool:
        """F18: a browser page (which sends its Origin) may start a conversation only from an
        allowed origin, when the service lists any. Clients that send none are not browsers
        and not concerned: the check keeps other web sites from embedding the chat."""
        return not self.allowed_origins or origin is None or origin in self.allowed_origins


def _repeated(values: list[_T]) -> _T | None:
    seen: set[_T] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


class Group(_Entity, frozen=True):
    id: Id
    name: Name


def hash_token(token: str) -> str:
    """The stored form of a secret token: compared by SHA-256, never kept in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


class OperatorProfile(_Entity, frozen=True):
    """An operator as an administrator sees them (no secret)."""

    id: Id
    name: Name
    groups: tuple[Id, ...]
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    active: bool = True


class Operator(OperatorProfile, frozen=True, kw_only=True):
    """An operator as stored and as the rules see them: the profile and the hash of their
    console sign-in token."""

    token_hash: str


class Role(StrEnum):
    ADMIN = "admin"  # everything
    SUPERVISOR = "supervisor"  # read configuration; conversations, operations, reports, audit
    OPERATOR = "operator"  # its operator's conversations: list, transcript, resume


class ApiTokenProfile(_Entity, frozen=True):
    """An API token as an administrator sees it (no secret).

    An ``operator`` token acts for one operator (``operator_id``): it sees only that
    operator's conversations and those of the services their groups serve, and resumes only
    as that operator."""

    id: Key
    name: Name
    role: Role
    operator_id: Id | None = None


class ApiToken(ApiTokenProfile, frozen=True, kw_only=True):
    token_hash: str


#: What a user name may be: letters, digits and ``. _ - @``, compared without regard to case.
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")]

#: A password's length, in characters: long enough to resist guessing (NIST SP 800-63B asks at
#: least 8; people's passphrases pass 12 easily), short enough that hashing one costs nothing
#: unusual.
PASSWORD_MIN, PASSWORD_MAX = 12, 256


def password_weakness(password: str, username: str) -> str | None:
    """Why ``password`` may not be ``username``'s password, or None when it may."""
    if len(password) < PASSWORD_MIN:
        return f"a password needs at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"a password has at most {PASSWORD_MAX} characters"
    name, folded = username.casefold(), password.casefold()
    # A short name (``ana``) may well be inside a good passphrase; a longer one may not.
    if folded == name or (len(name) >= 4 and name in folded):
        return "a password must not contain the user name"
    if len(set(password)) < 4:
        return "a password needs at least 4 different characters"
    return None


class UserProfile(_Entity, frozen=True):
    """A person who signs in with a user name and a password, as an administrator sees them
    (no secret). ``role`` is an API token's: an ``operator`` acts for one operator
    (``operator_id``), in the API and on the console."""

    id: Key
    username: UserName
    name: Name
    role: Role
    operator_id: Id | None = None
    active: bool = True


class User(UserProfile, frozen=True, kw_only=True):
    """A person as stored: the profile, their password's argon2id hash (None: none set yet,
    they cannot sign in), and the generation of their sessions — a session is good only for
    the generation it was opened in, so raising it ends every session of the person at once
    (signing out, a password change, deactivation)."""

    password_hash: str | None = None
    generation: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, username={self.username!r}, role={self.role.value})"

    def ends_sessions(self, before: User | None) -> bool:
        """Whether replacing ``before`` with this must end ``before``'s sessions: what a
        session may do changed (role, operator, user name) or the person was deactivated."""
        return before is not None and (
            (before.role, before.operator_id, before.username.casefold())
            != (self.role, self.operator_id, self.username.casefold())
            or (before.active and not self.active)
        )


class Palette(_Entity, frozen=True):
    """The widget's colours (F6)."""

    button: Colour = "#0b5fff"
    header: Colour = "#0b5fff"
    panels: Colour = "#ffffff"
    visitor_bubble: Colour = "#e8f0ff"
    operator_bubble: Colour = "#f1f1f1"


class Attachments(_Entity, frozen=True):
    """What visitors and operators may attach (F11): installation-wide in ``parameters``, and
    per service where a service sets its own (``Service.attachments`` replaces it whole).

    ``types`` come from the list Omni can recognise by content
    (:data:`omni.domain.attachments.KNOWN_TYPES`); ``folder`` is a folder *under* the server's
    attachments root (``[server.attachments]``), never a path of its own choosing."""

    #: Off by default: a server accepts no file until an administrator says so.
    enabled: bool = False
    max_bytes: Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTACHMENT_BYTES)] = 10 * 1024 * 1024
    types: Annotated[
        tuple[Annotated[str, msgspec.Meta(max_length=100)], ...], msgspec.Meta(max_length=50)
    ] = (
        "image/png",
        "image/jpeg",
        "application/pdf",
    )
    folder: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=300,
            pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*(/[A-Za-z0-9][A-Za-z0-9_-]*)*$",
        ),
    ] = "attachments"
    #: What one conversation may carry in all: files, and bytes.
    max_files_per_conversation: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    max_bytes_per_conversation: Annotated[
        int, msgspec.Meta(ge=1, le=100 * MAX_ATTACHMENT_BYTES)
    ] = 100 * 1024 * 1024

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in KNOWN_TYPES]
        if unknown:
            raise ValueError(
                f"types: {', '.join(map(repr, unknown))} cannot be recognised by content; "
                f"known types: {', '.join(sorted(KNOWN_TYPES))}"
            )
        if (twice := _repeated(list(self.types))) is not None:
            raise ValueError(f"types: {twice!r} is listed twice")
        if self.max_bytes > self.max_bytes_per_conversation:
            raise ValueError("max_bytes must not exceed max_bytes_per_conversation")


#: The events a webhook may subscribe to (docs/admin-api.md, "Webhooks").
WEBHOOK_EVENTS = (
    "conversation.started",
    "conversation.queued",
    "conversation.assigned",
    "conversation.transferred",
    "conversation.message",
    "conversation.ended",
    "conversation.survey_answered",
    "conversation.closed",
)
WebhookEvent = Literal[
    "conversation.started",
    "conversation.queued",
    "conversation.assigned",
    "conversation.transferred",
    "conversation.message",
    "conversation.ended",
    "conversation.survey_answered",
    "conversation.closed",
]
#: Where a webhook is sent: an http(s) URL with a host and no credentials (its addresses are
#: checked where it is saved and where it is called: ``omni.netguard``).
WebhookUrl = Annotated[
    str,
    msgspec.Meta(
        min_length=10,
        max_length=2000,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#@\\]+([/?#]\S*)?$",
    ),
]
#: A Standard Webhooks signing secret: ``whsec_`` and the base64 of 24 to 64 random bytes.
WebhookSecret = Annotated[
    str, msgspec.Meta(pattern=r"^whsec_[A-Za-z0-9+/]{32,88}={0,2}$", max_length=100)
]


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ``ValueError`` when it is not one of 24 to 64
    bytes."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("secret: not base64 after whsec_") from None
    if not 24 <= len(key) <= 64:
        raise ValueError(f"secret: {len(key)} bytes; a secret has 24 to 64 bytes")
    return key


class WebhookProfile(_Entity, frozen=True):
    """An outgoing webhook subscription of one service, as an administrator sees it (no
    secret): the events it wants, delivered to ``url`` at least once and in order per
    conversation, signed the Standard Webhooks way."""

    id: Key
    service_id: Id
    url: WebhookUrl
    events: Annotated[tuple[WebhookEvent, ...], msgspec.Meta(min_length=1, max_length=8)]
    #: An inactive webhook gets no new deliveries (those pending are parked).
    active: bool = True
    description: Text = ""

    def __post_init__(self) -> None:
        if (twice := _repeated(list(self.events))) is not None:
            raise ValueError(f"events: {twice!r} is listed twice")
        parts = urlsplit(self.url)
        try:
            parts.port  # noqa: B018 (it raises on a bad port)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None
        if not parts.hostname:
            raise ValueError("url: no host")


class Webhook(WebhookProfile, frozen=True, kw_only=True):
    """A webhook as stored: the profile and its signing secret (write-only in the API; the
    server needs it in clear to sign)."""

    secret: WebhookSecret

    def __post_init__(self) -> None:
        super().__post_init__()
        webhook_secret_key(self.secret)

    def __repr__(self) -> str:
        return f"Webhook(id={self.id!r}, service_id={self.service_id})"


#: The messaging platforms a channel connects (issue 17; docs/admin-api.md, "Channels").
ChannelKind = Literal["whatsapp", "telegram", "generic"]
#: Where each platform's API is unless a channel says otherwise (``base_url``).
CHANNEL_BASE_URLS: Mapping[str, str] = {
    "whatsapp": "https://graph.facebook.com",
    "telegram": "https://api.telegram.org",
}
#: A platform's id as a channel stores it (a phone number id, an API version).
PlatformId = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: A secret a platform gives or takes (an access token, an app secret, a verify token).
ChannelSecret = Annotated[str, msgspec.Meta(min_length=8, max_length=1000)]
#: Telegram's ``secret_token``: 1-256 characters of ``A-Za-z0-9_-`` (here at least 16).
TelegramSecret = Annotated[
    str, msgspec.Meta(min_length=16, max_length=256, pattern=r"^[A-Za-z0-9_-]+$")
]


class ChannelProfile(_Entity, frozen=True):
    """A messaging channel of one service, as an administrator sees it (no secret): messages
    arriving at ``/channels/{id}/webhook`` become conversations of ``service_id``, and what the
    visitor would have seen in the WebChat goes back through the platform's API at
    ``base_url`` (the platform's own unless set: a test's stand-in, a proxy)."""

    id: Key
    kind: ChannelKind
    service_id: Id
    #: The platform's API (WhatsApp, Telegram); None: the platform's public one.
    base_url: WebhookUrl | None = None
    #: The generic channel: where replies are POSTed (signed like outgoing webhooks).
    reply_url: WebhookUrl | None = None
    #: WhatsApp: the business phone number's id, and the Graph API version.
    phone_number_id: PlatformId | None = None
    api_version: PlatformId = "v21.0"
    #: An inactive channel takes no message (404) and sends nothing (pending replies park).
    active: bool = True
    description: Text = ""

    def __post_init__(self) -> None:
        for name in ("base_url", "reply_url"):
            url = getattr(self, name)
            if url is not None and not urlsplit(url).hostname:
                raise ValueError(f"{name}: no host")
        if self.kind == "whatsapp" and self.phone_number_id is None:
            raise ValueError("a whatsapp channel needs phone_number_id")
        if self.kind == "generic" and self.reply_url is None:
            raise ValueError("a generic channel needs reply_url")

    @property
    def api_url(self) -> str:
        """The platform's API root: ``base_url``, else the platform's public one."""
        return (self.base_url or CHANNEL_BASE_URLS.get(self.kind, "")).rstrip("/")


#: Each kind's secrets (write-only): WhatsApp's access token (``token``), app secret (the
#: POSTs' signature) and verify token (the subscription's challenge); Telegram's bot token and
#: the ``secret_token`` set with ``setWebhook``; the generic channel's Standard Webhooks secret.
CHANNEL_SECRETS: Mapping[str, tuple[str, ...]] = {
    "whatsapp": ("token", "app_secret", "verify_token"),
    "telegram": ("token", "secret_token"),
    "generic": ("secret",),
}


class Channel(ChannelProfile, frozen=True, kw_only=True):
    """A channel as stored: the profile and its kind's secrets (:data:`CHANNEL_SECRETS`; the
    server needs them in clear to sign, check and call)."""

    token: ChannelSecret | None = None
    app_secret: ChannelSecret | None = None
    verify_token: ChannelSecret | None = None
    secret_token: TelegramSecret | None = None
    secret: WebhookSecret | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        needed = CHANNEL_SECRETS[self.kind]
        for name in ("token", "app_secret", "verify_token", "secret_token", "secret"):
            given = getattr(self, name) is not None
            if name in needed and not given:
                raise ValueError(f"a {self.kind} channel needs {name}")
            if name not in needed and given:
                raise ValueError(f"a {self.kind} channel takes no {name}")
        if self.secret is not None:
            webhook_secret_key(self.secret)

    def __repr__(self) -> str:
        return f"Channel(id={self.id!r}, kind={self.kind!r}, service_id={self.service_id})"


class PauseReason(_Entity, frozen=True):
    """Why an operator is paused (issue 14): the console offers the configured list, metrics
    and reports count paused operators by its ``id``."""

    id: Key
    label: Name


#: Pause reasons an installation starts with; an administrator edits the list (parameters).
DEFAULT_PAUSE_REASONS: tuple[PauseReason, ...] = (
    PauseReason(id="lunch", label="Lunch"),
    PauseReason(id="break", label="Break"),
    PauseReason(id="training", label="Training"),
    PauseReason(id="other", label="Other"),
)

#: At most this many pause reasons: each is a label value of a Prometheus series.
MAX_PAUSE_REASONS = 20


class Parameters(_Entity, frozen=True):
    """Installation-wide settings: the widget's look (F6), identification policy (F7) and the
    operators' pause reasons."""

    palette: Palette = msgspec.field(default_factory=Palette)
    logo: ImageRef = ""
    #: Every identification field is required, whatever each service says (F7).
    all_fields_required: bool = False
    attachments: Attachments = msgspec.field(default_factory=Attachments)
    #: The reasons an operator may give for a pause, in the order the console shows them;
    #: none: pauses carry no reason.
    pause_reasons: Annotated[
        tuple[PauseReason, ...], msgspec.Meta(max_length=MAX_PAUSE_REASONS)
    ] = DEFAULT_PAUSE_REASONS

    def __post_init__(self) -> None:
        twice = _repeated([reason.id for reason in self.pause_reasons])
        if twice is not None:
            raise ValueError(f"pause_reasons: id {twice!r} is used twice")

    def pause_reason(self, reason_id: str) -> PauseReason | None:
        return next((r for r in self.pause_reasons if r.id == reason_id), None)


_NO_SUBSCRIPTIONS: Mapping[str, tuple[Webhook, ...]] = {}


@dataclass(frozen=True)
class Directory:
    """The live configuration: one immutable snapshot, replaced as a whole on change.

    Construction checks that the entities fit together (every reference resolves, no two
    secrets alike) and raises ``ValueError`` naming the entity otherwise."""

    services: Mapping[int, Service]
    groups: Mapping[int, Group]
    operators: Mapping[int, Operator]
    schedules: Mapping[str, Schedule]
    parameters: Parameters = field(default_factory=Parameters)
    api_tokens: Mapping[str, ApiToken] = field(default_factory=dict)
    users: Mapping[str, User] = field(default_factory=dict)
    bots: Mapping[str, Bot] = field(default_factory=dict)
    webhooks: Mapping[str, Webhook] = field(default_factory=dict)
    channels: Mapping[str, Channel] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Directory:
        return cls(services={}, groups={}, operators={}, schedules={})

    def api_token(self, token: str) -> ApiToken | None:
        digest = hash_token(token)
        found = None
        for candidate in self.api_tokens.values():
            # compare_digest on every candidate: the time taken does not tell which matched.
            if hmac.compare_digest(candidate.token_hash, digest):
                found = candidate
        if found is not None and found.operator_id is not None:
            # An operator's token acts as the operator: it works only while they are active.
            operator = self.operators.get(found.operator_id)
            if operator is None or not operator.active:
                return None
        return found

    def user_by_name(self, username: str) -> User | None:
        """The user of ``username`` (whatever its case), active or not."""
        folded = username.casefold()
        return next((u for u in self.users.values() if u.username.casefold() == folded), None)

    def session_user(self, user_id: str, generation: int) -> User | None:
        """The user a session of ``generation`` acts for, while it is good: the user is
        active, has a password, is still at that generation, and — an operator — their operator
        is active. (Whether the session has expired is the caller's, who has the clock.)"""
        user = self.users.get(user_id)
        if user is None or not user.active or user.password_hash is None:
            return None
        if user.generation != generation:
            return None
        if user.operator_id is not None:
            operator = self.operators.get(user.operator_id)
            if operator is None or not operator.active:
                return None
        return user

    def attachments_of(self, service: Service) -> Attachments:
        """The attachment limits of ``service``: its own, or the installation's."""
        own = service.attachments
        return own if own is not None else self.parameters.attachments

    def largest_attachment(self) -> int:
        """The most bytes any service accepts in one file now (0: none accepts files)."""
        limits = [self.parameters.attachments, *(s.attachments for s in self.services.values())]
        return max((a.max_bytes for a in limits if a is not None and a.enabled), default=0)

    @cached_property
    def routing_domains(self) -> Mapping[int, int]:
        """Each group's *routing domain*, named by its lowest group id: the groups that share
        an operator or a service, transitively. A conversation never leaves its service's
        domain for routing, and an operator's capacity is shared only within theirs — so a
        domain is what one node owns whole in cluster mode (docs/scale-out.md)."""
        parent = {group_id: group_id for group_id in self.groups}

        def find(group_id: int) -> int:
            while parent[group_id] != group_id:
                parent[group_id] = parent[parent[group_id]]
                group_id = parent[group_id]
            return group_id

        sets = [
            service_groups
            for service_groups in ([link.group for link in s.links] for s in self.services.values())
        ]
        sets += [list(o.groups) for o in self.operators.values()]
        for members in sets:
            known = sorted(g for g in members if g in parent)
            for other in known[1:]:
                a, b = find(known[0]), find(other)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        return {group_id: find(group_id) for group_id in sorted(self.groups)}

    def service_domain(self, service_id: int) -> int | None:
        """The routing domain of ``service_id`` (None: no such service)."""
        service = self.services.get(service_id)
        return None if service is None else self.routing_domains.get(service.links[0].group)

    def operator_domain(self, operator_id: int) -> int | None:
        """The routing domain of ``operator_id``'s groups (None: none, or no such operator)."""
        operator = self.operators.get(operator_id)
        if operator is None or not operator.groups:
            return None
        return self.routing_domains.get(min(operator.groups))

    def embeddable_from(self, origin: str) -> bool:
        """F18 at the handshake: whether a page of ``origin`` may open a visitor connection —
        some service accepts it (each ``start`` then checks its own service)."""
        return any(service.accepts_origin(origin) for service in self.services.values())

    def __post_init__(self) -> None:
        problems: list[str] = []
        for service in self.services.values():
            if service.schedule is not None and service.schedule not in self.schedules:
                problems.append(f"service {service.id}: unknown schedule {service.schedule!r}")
            for link in service.links:
                if link.group not in self.groups:
                    problems.append(f"service {service.id}: unknown group {link.group}")
                if link.schedule is not None and link.schedule not in self.schedules:
                    problems.append(
                        f"service {service.id}, group {link.group}: "
                        f"unknown schedule {link.schedule!r}"
                    )
            if service.bot is not None:
                bot = self.bots.get(service.bot)
                if bot is None:
                    problems.append(f"service {service.id}: unknown bot {service.bot!r}")
                else:
                    linked = {link.group for link in service.links}
                    for node_id, group_id in bot.group_nodes():
                        if group_id not in linked:
                            problems.append(
                                f"bot {bot.id}, node {node_id!r}: group {group_id} is not "
                                f"linked to service {service.id}, which uses the bot"
                            )
        for bot in self.bots.values():
            for node_id, group_id in bot.group_nodes():
                if group_id not in self.groups:
                    problems.append(f"bot {bot.id}, node {node_id!r}: unknown group {group_id}")
        for operator in self.operators.values():
            for group_id in operator.groups:
                if group_id not in self.groups:
                    problems.append(f"operator {operator.id}: unknown group {group_id}")
        for webhook in self.webhooks.values():
            if webhook.service_id not in self.services:
                problems.append(f"webhook {webhook.id}: unknown service {webhook.service_id}")
        for channel in self.channels.values():
            if channel.service_id not in self.services:
                problems.append(f"channel {channel.id}: unknown service {channel.service_id}")
        hashes = [o.token_hash for o in self.operators.values()]
        if len(set(hashes)) != len(hashes):
            problems.append("two operators share a console token")
        for token in self.api_tokens.values():
            if token.operator_id is None:
                continue
            if token.role is not Role.OPERATOR:
                problems.append(
                    f"api token {token.id}: only an operator token is tied to an operator"
                )
            elif token.operator_id not in self.operators:
                problems.append(f"api token {token.id}: unknown operator {token.operator_id}")
        names = [u.username.casefold() for u in self.users.values()]
        if (twice := _repeated(names)) is not None:
            problems.append(f"two users have the user name {twice!r}")
        for user in self.users.values():
            if user.role is Role.OPERATOR and user.operator_id is None:
                problems.append(f"user {user.id}: an operator needs operator_id")
            elif user.operator_id is not None and user.role is not Role.OPERATOR:
                problems.append(f"user {user.id}: only an operator is tied to an operator")
            elif user.operator_id is not None and user.operator_id not in self.operators:
                problems.append(f"user {user.id}: unknown operator {user.operator_id}")
        api_hashes = [t.token_hash for t in self.api_tokens.values()]
        if len(set(api_hashes)) != len(api_hashes):
            problems.append("two API tokens are the same secret")
        if problems:
            raise ValueError("; ".join(problems))

    @cached_property
    def _subscriptions(self) -> dict[int, dict[str, tuple[Webhook, ...]]]:
        index: dict[int, dict[str, list[Webhook]]] = {}
        for webhook in sorted(self.webhooks.values(), key=lambda w: w.id):
            if webhook.active:
                for event in webhook.events:
                    index.setdefault(webhook.service_id, {}).setdefault(event, []).append(webhook)
        return {s: {e: tuple(w) for e, w in events.items()} for s, events in index.items()}

    def subscriptions(self, service_id: int) -> Mapping[str, tuple[Webhook, ...]]:
        """The active webhooks of ``service_id`` by the event they want; empty when it has
        none (what a conversation asks at each step: one dict lookup, computed once per
        directory)."""
        return self._subscriptions.get(service_id, _NO_SUBSCRIPTIONS)

    def services_of(self, operator_id: int) -> frozenset[int]:
        """The services whose conversations can reach the operator: those linked to one of
        the operator's groups (none if there is no such operator)."""
        operator = self.operators.get(operator_id)
        if operator is None:
            return frozenset()
        groups = set(operator.groups)
        return frozenset(
            s.id for s in self.services.values() if any(link.group in groups for link in s.links)
        )

    def operator_may_see(self, operator_id: int, service_id: int, held_by: int | None) -> bool:
        """Whether an operator may see (and act on) a conversation of ``service_id`` last held
        by ``held_by``: one they handled, or of a service their groups serve. The console and
        the API apply this one rule."""
        return held_by == operator_id or service_id in self.services_of(operator_id)

    def operator_by_token(self, token: str) -> Operator | None:
        digest = hash_token(token)
        found = None
        for operator in self.operators.values():
            # compare_digest on every candidate: the time taken does not tell which one matched.
            if hmac.compare_digest(operator.token_hash, digest) and operator.active:
                found = operator
        return found

    def zone_of(self, service: Service) -> str:
        """The time zone the service lives in: its schedule's (UTC when it has none)."""
        schedule = self.schedules.get(service.schedule or "")
        return schedule.timezone if schedule is not None else "UTC"

    def route(self, service: Service, at: datetime) -> int | None:
        """The group a new conversation of ``service`` goes to at ``at``, or None when closed.

        The service's own schedule gates everything; then the first linked group (in the
        configured order, which is the priority order) whose own schedule, if any, is open.
        """
        if service.schedule is not None and not self.schedules[service.schedule].is_open(at):
            return None
        for link in service.links:
            if link.schedule is None or self.schedules[link.schedule].is_open(at):
                return link.group
        return None

    def takes_visitors(self, service: Service, at: datetime) -> bool:
        """Whether a visitor who starts now is answered — by a group, or by the service's
        chatbot (which stays reachable while the groups behind it are closed, F5): what the
        pages call open."""
        return self.route(service, at) is not None or self.bot_for(service, at) is not None

    def bot_for(self, service: Service, at: datetime) -> Bot | None:
        """The chatbot a new conversation of ``service`` meets at ``at``: the service's, while
        the service's own schedule (if it has one) is open — the groups' schedules decide
        only at the hand-off (F5), so the bot stays reachable while they are closed."""
        if service.bot is None:
            return None
        if service.schedule is not None and not self.schedules[service.schedule].is_open(at):
            return None
        return self.bots[service.bot]

    def group_open(self, service: Service, group_id: int, at: datetime) -> bool:
        """Whether ``group_id`` takes ``service``'s conversations at ``at``: the service's
        schedule and the link's own (F5); a group the service does not link never does."""
        link = next((link for link in service.links if link.group == group_id), None)
        if link is None:
            return False
        if service.schedule is not None and not self.schedules[service.schedule].is_open(at):
            return False
        return link.schedule is None or self.schedules[link.schedule].is_open(at)

    def group_opens_at(self, service: Service, group_id: int, at: datetime) -> datetime | None:
        """When ``group_id``, closed for ``service`` at ``at``, next opens (UTC); None when it
        is open, or does not open within the look-ahead."""
        link = next((link for link in service.links if link.group == group_id), None)
        if link is None:
            return None
        return self._first_open(
            {service.schedule, link.schedule}, at, lambda m: self.group_open(service, group_id, m)
        )

    def next_opening(self, service: Service, at: datetime) -> datetime | None:
        """When ``service``, closed at ``at``, next takes conversations (:meth:`route` finds a
        group), in UTC; None when it is open at ``at``, or opens not within the schedules'
        look-ahead (400 days) of ``at``.

        Openness can only change where one of its schedules (the service's, its links') does,
        so the answer is the first of those changes at which :meth:`route` finds a group."""
        keys = {service.schedule, *(link.schedule for link in service.links)}
        return self._first_open(keys, at, lambda m: self.route(service, m) is not None)

    def _first_open(
        self, keys: set[str | None], at: datetime, is_open: Callable[[datetime], bool]
    ) -> datetime | None:
        """The first moment from ``at`` on at which ``is_open``, which depends only on the
        schedules ``keys``: None when open at ``at`` or not within the look-ahead."""
        at = at.astimezone(UTC)
        if is_open(at):
            return None
        # Each schedule's next change after the moment looked at (None: none ahead).
        upcoming = {
            key: self.schedules[key].next_change(at) for key in sorted(k for k in keys if k)
        }
        limit = at + LOOKAHEAD
        while True:
            changes = [c for c in upcoming.values() if c is not None]
            if not changes:
                return None
            moment = min(changes)
            if moment > limit:
                return None
            if is_open(moment):
                return moment
            for key, change in upcoming.items():
                if change == moment:
                    upcoming[key] = self.schedules[key].next_change(moment)
