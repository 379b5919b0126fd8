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


@dataclass(frozen=True, slots=True)
class SurveyQuestion:
    """One question of a satisfaction survey.

    ``kind`` is ``rating`` (an integer from ``minimum`` to ``maximum``) or ``text``.
    """

    id: str
    kind: str
    label: str
    required: bool = False
    minimum: int = 1
    maximum: int = 5
    max_length: int = 2000

    def as_wire(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "required": self.required,
        }
        if self.kind == "rating":
            data["min"] = self.minimum
            data["max"] = self.maximum
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
    """Per-service deadlines, in seconds (F16)."""

    #: How long an operator has to accept an offer before it goes to somebody else.
    offer_timeout: float = 30.0
    #: How long a survey waits for the visitor before the conversation is closed without it.
    survey_timeout: float = 600.0


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

    def survey_questions(self) -> tuple[SurveyQuestion, ...]:
        return DEFAULT_SURVEY if self.survey is SurveyMode.DEFAULT else ()


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


@dataclass(frozen=True)
class Directory:
    """The live configuration: one immutable snapshot, replaced as a whole on change."""

    services: Mapping[int, Service]
    groups: Mapping[int, Group]
    operators: Mapping[int, Operator]
    schedules: Mapping[str, Schedule]

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
        if problems:
            raise ValueError("; ".join(problems))

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
