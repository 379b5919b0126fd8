"""Configuration entities: services, groups, their links, operators, and their directory.

Rules of this module:

* Everything here is immutable. A configuration change builds a new :class:`Directory`; actors
  read the directory they are given and never mutate it, so a change can be applied live by
  swapping one reference.
* Ids are integers (services are addressed by number in the widget URL: ``/webchat?service=25``).
* No I/O and no clock: whether something is open is asked with an explicit instant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from omni.domain.schedule import Schedule


class SurveyMode(StrEnum):
    NONE = "none"
    DEFAULT = "default"
    CUSTOM = "custom"


class QuestionKind(StrEnum):
    RATING = "rating"  # whole number minimum..maximum (stars)
    SCALE = "scale"  # whole number minimum..maximum (e.g. 0-10 recommendation)
    CHOICE = "choice"  # one of ``options``
    TEXT = "text"  # free text up to max_length


@dataclass(frozen=True, slots=True)
class SurveyQuestion:
    """One question of a satisfaction survey (F13)."""

    id: str
    kind: str
    label: str
    required: bool = False
    minimum: int = 1
    maximum: int = 5
    max_length: int = 2000
    options: tuple[str, ...] = ()

    def as_wire(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "required": self.required,
        }
        if self.kind in (QuestionKind.RATING, QuestionKind.SCALE):
            data["min"] = self.minimum
            data["max"] = self.maximum
        elif self.kind == QuestionKind.CHOICE:
            data["options"] = list(self.options)
        else:
            data["max_length"] = self.max_length
        return data


#: The default survey of the reference product: a 1-5 rating and a free comment, both skippable.
DEFAULT_SURVEY: tuple[SurveyQuestion, ...] = (
    SurveyQuestion(id="rating", kind="rating", label="How would you rate this conversation?"),
    SurveyQuestion(id="comment", kind="text", label="Anything you would like to tell us?"),
)


@dataclass(frozen=True, slots=True)
class Avatar:
    name: str
    image: str = ""

    def as_wire(self) -> dict[str, str]:
        return {"name": self.name, "image": self.image}


@dataclass(frozen=True, slots=True)
class Timers:
    """Per-service deadlines, in seconds (F16). ``None``: no deadline."""

    #: How long an operator has to accept an offer before it goes to somebody else.
    offer_timeout: float = 30.0
    #: How long a survey waits for the visitor before the conversation is closed without it.
    survey_timeout: float = 600.0
    #: How long a visitor may wait in the queue before the conversation is abandoned.
    queue_timeout: float | None = None
    #: Visitor silence before a warning, and before the conversation is closed.
    visitor_idle_warning: float | None = None
    visitor_idle_close: float | None = None
    #: How long an operator may leave a visitor's message unanswered.
    operator_reply: float | None = None


@dataclass(frozen=True, slots=True)
class RequiredFields:
    """Which identification fields the visitor must fill in (F7); the name always."""

    email: bool = False
    phone: bool = False


@dataclass(frozen=True, slots=True)
class GroupLink:
    """A service's link to an operator group; an optional schedule of its own (F2, F5)."""

    group_id: int
    schedule_id: str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    id: int
    name: str
    links: tuple[GroupLink, ...]
    schedule_id: str | None = None
    greeting: str = "Hello! How can I help you?"
    out_of_hours_message: str = (
        "We are closed right now. Leave a message and we will get back to you."
    )
    closing_message: str = "Thank you for contacting us."
    avatar: Avatar = field(default_factory=lambda: Avatar(name="Omni"))
    survey: SurveyMode = SurveyMode.DEFAULT
    timers: Timers = field(default_factory=Timers)
    custom_survey: tuple[SurveyQuestion, ...] = ()
    transcript_email: bool = True
    required_fields: RequiredFields = field(default_factory=RequiredFields)
    allowed_origins: tuple[str, ...] = ()
    #: Key of the signed visitor identities this service accepts (F8); None: it accepts none.
    identity_secret: str | None = field(default=None, repr=False)
    #: A visitor must pass a CAPTCHA to start a conversation (F19).
    captcha: bool = False

    def survey_questions(self) -> tuple[SurveyQuestion, ...]:
        if self.survey is SurveyMode.DEFAULT:
            return DEFAULT_SURVEY
        if self.survey is SurveyMode.CUSTOM:
            return self.custom_survey
        return ()


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str


def hash_token(token: str) -> str:
    """The stored form of a secret token: compared by SHA-256, never kept in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    name: str
    groups: tuple[int, ...]
    capacity: int
    token_hash: str
    active: bool = True

    def token_matches(self, token: str) -> bool:
        return hmac.compare_digest(self.token_hash, hash_token(token))


class Role(StrEnum):
    ADMIN = "admin"  # everything
    SUPERVISOR = "supervisor"  # read configuration; conversations, operations, reports, audit
    OPERATOR = "operator"  # its operator's conversations: list, transcript, resume


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    name: str
    role: Role
    token_hash: str
    #: The operator an ``operator`` token acts for: it sees only that operator's conversations
    #: and those of the services their groups serve, and resumes only as that operator.
    operator_id: int | None = None


@dataclass(frozen=True, slots=True)
class Palette:
    button: str = "#0b5fff"
    header: str = "#0b5fff"
    panels: str = "#ffffff"
    visitor_bubble: str = "#e8f0ff"
    operator_bubble: str = "#f1f1f1"


@dataclass(frozen=True, slots=True)
class Parameters:
    """Installation-wide settings (F6, F7, F11)."""

    palette: Palette = field(default_factory=Palette)
    logo: str = ""
    all_fields_required: bool = False
    attachment_max_bytes: int = 10 * 1024 * 1024
    attachment_types: tuple[str, ...] = ("image/png", "image/jpeg", "application/pdf")
    attachment_folder: str = "attachments"


@dataclass(frozen=True)
class Directory:
    """The live configuration: one immutable snapshot, replaced as a whole on change."""

    services: Mapping[int, Service]
    groups: Mapping[int, Group]
    operators: Mapping[int, Operator]
    schedules: Mapping[str, Schedule]
    parameters: Parameters = field(default_factory=Parameters)
    api_tokens: Mapping[str, ApiToken] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> Directory:
        return cls(services={}, groups={}, operators={}, schedules={})

    def api_token(self, token: str) -> ApiToken | None:
        digest = hash_token(token)
        found = None
        for candidate in self.api_tokens.values():
            if hmac.compare_digest(candidate.token_hash, digest):
                found = candidate
        return found

    def __post_init__(self) -> None:
        problems: list[str] = []
        for service in self.services.values():
            if not service.links:
                problems.append(f"service {service.id} links no group")
            if service.schedule_id is not None and service.schedule_id not in self.schedules:
                problems.append(f"service {service.id}: unknown schedule {service.schedule_id!r}")
            for link in service.links:
                if link.group_id not in self.groups:
                    problems.append(f"service {service.id}: unknown group {link.group_id}")
                if link.schedule_id is not None and link.schedule_id not in self.schedules:
                    problems.append(
                        f"service {service.id}, group {link.group_id}: "
                        f"unknown schedule {link.schedule_id!r}"
                    )
        for operator in self.operators.values():
            if operator.capacity < 1:
                problems.append(f"operator {operator.id}: capacity must be at least 1")
            for group_id in operator.groups:
                if group_id not in self.groups:
                    problems.append(f"operator {operator.id}: unknown group {group_id}")
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
        api_hashes = [t.token_hash for t in self.api_tokens.values()]
        if len(set(api_hashes)) != len(api_hashes):
            problems.append("two API tokens are the same secret")
        if problems:
            raise ValueError("; ".join(problems))

    def services_of(self, operator_id: int) -> frozenset[int]:
        """The services whose conversations can reach the operator: those linked to one of
        the operator's groups (none if there is no such operator)."""
        operator = self.operators.get(operator_id)
        if operator is None:
            return frozenset()
        groups = set(operator.groups)
        return frozenset(
            s.id for s in self.services.values() if any(link.group_id in groups for link in s.links)
        )

    def operator_by_token(self, token: str) -> Operator | None:
        digest = hash_token(token)
        for operator in self.operators.values():
            # compare_digest on every candidate: the time taken does not tell which one matched.
            if hmac.compare_digest(operator.token_hash, digest) and operator.active:
                return operator
        return None

    def route(self, service: Service, at: datetime) -> int | None:
        """The group a new conversation of ``service`` goes to at ``at``, or None when closed.

        The service's own schedule gates everything; then the first linked group (in the
        configured order, which is the priority order) whose own schedule, if any, is open.
        """
        if service.schedule_id is not None and not self.schedules[service.schedule_id].is_open(at):
            return None
        for link in service.links:
            if link.schedule_id is None or self.schedules[link.schedule_id].is_open(at):
                return link.group_id
        return None
