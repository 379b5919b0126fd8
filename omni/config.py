"""The TOML configuration file: server settings and a bootstrap :class:`Directory`.

Rules: the file is parsed by ``tomllib`` and validated by msgspec into typed structs, then turned
into domain objects, whose own checks (schedules, links) run too. Every problem is reported as a
:class:`ConfigError` that names the file and the field (``$.services[0].links[1].group``) — never
a traceback, never a half-loaded configuration.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import msgspec

from omni.actors.hub import Settings
from omni.domain.model import (
    Avatar,
    Directory,
    Group,
    GroupLink,
    Operator,
    Service,
    SurveyMode,
    Timers,
    hash_token,
)
from omni.domain.schedule import Interval, Schedule

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
Id = Annotated[int, msgspec.Meta(ge=1)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Span = Annotated[list[str], msgspec.Meta(min_length=2, max_length=2)]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ConfigError(Exception):
    pass


class _Struct(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ServerSection(_Struct):
    host: str = "127.0.0.1"
    ws_port: Port = 8765
    http_port: Port = 8080
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    operator_grace_seconds: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 120.0
    outbound_buffer: Annotated[int, msgspec.Meta(ge=16, le=1_000_000)] = 1024


class SpecialDay(_Struct):
    date: date
    intervals: list[Span] = []


class ScheduleSection(_Struct):
    id: Name
    timezone: str
    weekly: dict[str, list[Span]] = {}
    holidays: list[date] = []
    special_days: list[SpecialDay] = []


class GroupSection(_Struct):
    id: Id
    name: Name


class LinkSection(_Struct):
    group: Id
    schedule: str | None = None


class AvatarSection(_Struct):
    name: Name
    image: str = ""


class TimersSection(_Struct):
    offer_timeout: PositiveSeconds = 30.0
    survey_timeout: PositiveSeconds = 600.0


class ServiceSection(_Struct):
    id: Id
    name: Name
    links: Annotated[list[LinkSection], msgspec.Meta(min_length=1)]
    schedule: str | None = None
    greeting: str = "Hello! How can I help you?"
    out_of_hours_message: str = (
        "We are closed right now. Leave a message and we will get back to you."
    )
    closing_message: str = "Thank you for contacting us."
    avatar: AvatarSection | None = None
    survey: SurveyMode = SurveyMode.DEFAULT
    timers: TimersSection = msgspec.field(default_factory=TimersSection)


class OperatorSection(_Struct):
    id: Id
    name: Name
    groups: list[Id]
    token: Annotated[str, msgspec.Meta(min_length=8)]
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    active: bool = True


class ConfigFile(_Struct):
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    schedules: list[ScheduleSection] = []
    groups: list[GroupSection] = []
    services: list[ServiceSection] = []
    operators: list[OperatorSection] = []


class Config(msgspec.Struct, frozen=True):
    server: ServerSection
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
    try:
        return Config(server=file.server, directory=_directory(file))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _intervals(spans: list[list[str]], where: str) -> tuple[Interval, ...]:
    try:
        return tuple(Interval.parse(start, end) for start, end in spans)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _schedule(section: ScheduleSection, index: int) -> Schedule:
    where = f"$.schedules[{index}]"
    weekly: dict[int, tuple[Interval, ...]] = {}
    for day, spans in section.weekly.items():
        if day not in WEEKDAYS:
            raise ValueError(f"{where}.weekly: unknown day {day!r} (use {', '.join(WEEKDAYS)})")
        weekly[WEEKDAYS.index(day)] = _intervals(spans, f"{where}.weekly.{day}")
    special = {
        s.date: _intervals(s.intervals, f"{where}.special_days[{i}]")
        for i, s in enumerate(section.special_days)
    }
    try:
        return Schedule(
            timezone=section.timezone,
            weekly=weekly,
            holidays=frozenset(section.holidays),
            special_days=special,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _directory(file: ConfigFile) -> Directory:
    for kind, items in (
        ("schedules", file.schedules),
        ("groups", file.groups),
        ("services", file.services),
        ("operators", file.operators),
    ):
        ids = [item.id for item in items]
        duplicates = sorted({i for i in ids if ids.count(i) > 1}, key=str)
        if duplicates:
            raise ValueError(f"$.{kind}: duplicate id(s) {', '.join(map(str, duplicates))}")
    tokens = [o.token for o in file.operators]
    if len(set(tokens)) != len(tokens):
        raise ValueError("$.operators: two operators share a token")
    return Directory(
        schedules={s.id: _schedule(s, i) for i, s in enumerate(file.schedules)},
        groups={g.id: Group(g.id, g.name) for g in file.groups},
        services={
            s.id: Service(
                id=s.id,
                name=s.name,
                links=tuple(GroupLink(link.group, link.schedule) for link in s.links),
                schedule_id=s.schedule,
                greeting=s.greeting,
                out_of_hours_message=s.out_of_hours_message,
                closing_message=s.closing_message,
                avatar=Avatar(s.avatar.name, s.avatar.image) if s.avatar else Avatar(s.name),
                survey=s.survey,
                timers=Timers(s.timers.offer_timeout, s.timers.survey_timeout),
            )
            for s in file.services
        },
        operators={
            o.id: Operator(
                id=o.id,
                name=o.name,
                groups=tuple(o.groups),
                capacity=o.capacity,
                token_hash=hash_token(o.token),
                active=o.active,
            )
            for o in file.operators
        },
    )
