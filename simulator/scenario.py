"""Scenario files: what a simulated contact-center day looks like (TOML, validated with msgspec).

A scenario embeds ``schedules``, ``groups``, ``services`` and ``bots`` tables exactly like Omni's
own configuration (``examples/omni.toml``) and adds the simulation: start, duration, operator
shifts, arrivals, visitor behaviour (in the queue, ``visitors``, and in each chatbot,
``bot_visitors``: :mod:`simulator.bot_visitors`) and a seed. Every problem is a
:class:`ScenarioError` naming the field (``$.operators[2].capacity``) and, when it can be found,
the TOML line.
"""

from __future__ import annotations

import csv
import random
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from omni.config import Config, ConfigError, parse_config
from omni.domain.bot import Bot
from omni.domain.configuration import body_of
from omni.domain.model import Group, Service
from omni.domain.schedule import Schedule
from omni.settings import ONE_ADDRESS_CROWD
from simulator.bot_visitors import BehaviourError, BotPlan, BotVisitorsBody, resolve
from simulator.draws import Distribution, NonNegative, Positive, Strict

HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")]


class ScenarioError(Exception):
    pass


class ShiftBody(Strict):
    """One operator (or ``count`` identical ones with consecutive ids) and their shift."""

    id: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    groups: Annotated[list[int], msgspec.Meta(min_length=1)]
    login: HHMM
    logout: HHMM
    handle_time: Distribution
    name: str = ""
    capacity: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1
    count: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    pauses: list[Annotated[list[HHMM], msgspec.Meta(min_length=2, max_length=2)]] = []
    reply_delay: NonNegative = 5.0
    #: At log-out: ``finish`` the conversations held (no new offers), or ``drop`` the
    #: connection and let the server requeue them after the grace period.
    leave: Literal["finish", "drop"] = "finish"
    #: The operator's console token. Only ``omni-sim run --real`` needs it (the server must know
    #: it); ``{id}`` is replaced by the operator id, and is required when ``count`` > 1.
    #: Default: ``sim-operator-{id}-Wq4Zr8Kx2Lm6Tn9V`` (public: for simulations only).
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class ArrivalBody(Strict):
    """Arrivals to one service: a Poisson rate per local hour of day (``rates`` maps "HH" or
    "HH-HH" to visitors per hour; other hours have ``rate``)."""

    service: int
    rate: NonNegative = 0.0
    rates: dict[str, NonNegative] = {}


class VisitorsBody(Strict):
    patience: Distribution | None = None  # None: infinite patience
    messages: Annotated[
        list[Annotated[int, msgspec.Meta(ge=0)]], msgspec.Meta(min_length=2, max_length=2)
    ] = msgspec.field(default_factory=lambda: [1, 3])
    think_time: Distribution | None = msgspec.field(default_factory=lambda: Distribution(mean=20.0))
    survey_share: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3


class ScenarioFile(Strict):
    start: datetime
    timezone: str
    duration_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 14)]
    schedules: list[Schedule]
    groups: list[Group]
    services: list[Service]
    operators: list[ShiftBody]
    name: str = ""
    seed: int = 1
    threshold: Positive = 20.0
    operator_grace_seconds: NonNegative = 120.0
    arrivals: list[ArrivalBody] = []
    #: CSV with columns ``offset`` (seconds from start) and ``service``; relative to the file.
    arrival_trace: str | None = None
    visitors: VisitorsBody = msgspec.field(default_factory=VisitorsBody)
    #: Chatbot scripts, exactly as in Omni's configuration (services name them in ``bot``).
    bots: list[Bot] = []
    #: How visitors answer each bot (simulator/bot_visitors.py).
    bot_visitors: list[BotVisitorsBody] = []


@dataclass(frozen=True)
class Operator:
    id: int
    name: str
    token: str
    groups: tuple[int, ...]
    capacity: int
    login: float  # seconds from start
    logout: float
    pauses: tuple[tuple[float, float], ...]
    handle_time: Distribution
    reply_delay: float
    leave: str


@dataclass(frozen=True)
class Scenario:
    name: str
    start: datetime  # aware
    zone: ZoneInfo
    duration: float  # seconds
    seed: int
    threshold: float
    config: Config
    operators: tuple[Operator, ...]
    arrivals: tuple[ArrivalBody, ...]
    trace: tuple[tuple[float, int], ...] | None
    visitors: VisitorsBody
    service_names: dict[int, str]
    group_names: dict[int, str]
    #: How visitors behave in each bot, by bot id.
    bot_plans: dict[str, BotPlan] = field(default_factory=dict)
    #: The configuration of a server that runs this scenario (``omni serve --config``): its
    #: schedules, groups, services and operators with their console tokens (``omni-sim config``).
    server_config: dict[str, Any] = field(default_factory=dict)

    # Offsets are real seconds, as the server's clock counts them: arithmetic goes through UTC
    # (Python adds and subtracts datetimes of one zone on the wall clock, which is an hour off
    # across a daylight-saving change).

    def local(self, offset: float) -> datetime:
        """The local time ``offset`` real seconds after the start."""
        return (self.start.astimezone(UTC) + timedelta(seconds=offset)).astimezone(self.zone)

    def offset_at(self, moment: datetime) -> float:
        """Real seconds from the start to ``moment`` (aware)."""
        return (moment.astimezone(UTC) - self.start.astimezone(UTC)).total_seconds()

    def offset_of(self, hhmm: str) -> float:
        """Seconds from start to ``hhmm`` local on the start's local day (clamped at 0)."""
        local = self.start.astimezone(self.zone)
        hours, minutes = (int(x) for x in hhmm.split(":"))
        day = local.date() + timedelta(days=hours // 24)  # "24:00": the next midnight
        moment = datetime.combine(day, time(hours % 24, minutes), tzinfo=self.zone)
        return max(0.0, self.offset_at(moment))

    def next_hour(self, offset: float) -> float:
        """The offset of the next top of a local hour after ``offset``: an hour of wall time is
        an hour of real time, except across a daylight-saving change (the clocks' jump lands
        on a top of the hour, so the next one comes on time)."""
        local = self.local(offset)
        into = local.minute * 60 + local.second + local.microsecond / 1e6
        return offset + 3600 - into

    def rate_at(self, arrival: ArrivalBody, offset: float) -> float:
        hour = self.local(offset).hour
        return _hourly(arrival)[hour]

    def arrival_times(self, rng: random.Random) -> list[tuple[float, int]]:
        """Every arrival (offset, service id), in time order: the trace, or non-homogeneous
        Poisson by local hour (each service its own stream, derived from ``rng``)."""
        if self.trace is not None:
            return [a for a in self.trace if a[0] < self.duration]
        out: list[tuple[float, int]] = []
        for arrival in self.arrivals:
            stream = random.Random(rng.getrandbits(64))
            t = 0.0
            while t < self.duration:
                boundary = _next_hour(self, t)
                rate = self.rate_at(arrival, t)
                if rate <= 0:
                    t = boundary
                    continue
                gap = stream.expovariate(rate / 3600.0)
                if t + gap >= boundary:
                    t = boundary  # memoryless: restart the draw at the new hour's rate
                    continue
                t += gap
                if t < self.duration:
                    out.append((t, arrival.service))
        out.sort()
        return out


def _next_hour(scenario: Scenario, offset: float) -> float:
    return max(offset + 1e-6, scenario.next_hour(offset))


def _hourly(arrival: ArrivalBody) -> list[float]:
    table = [arrival.rate] * 24
    for key, value in arrival.rates.items():
        first, _, last = key.partition("-")
        lo, hi = int(first), int(last) if last else int(first) + 1
        for h in range(lo, hi):
            table[h] = value
    return table


_RATE_KEY = re.compile(r"^([01]?[0-9]|2[0-3])(-([01]?[0-9]|2[0-4]))?$")


def load_raw(path: str | Path) -> tuple[dict[str, Any], str]:
    """A scenario file's TOML, parsed but not validated, and its text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    raw, text = load_raw(path)
    try:
        return parse_scenario(raw, base=path.parent, source=text)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def parse_scenario(raw: dict[str, Any], base: Path | None = None, source: str = "") -> Scenario:
    try:
        file = msgspec.convert(raw, ScenarioFile)
    except msgspec.ValidationError as exc:
        message = str(exc)
        line = find_line(source, message)
        raise ScenarioError(f"{message}" + (f" (line {line})" if line else "")) from None

    def fail(field: str, problem: str) -> ScenarioError:
        line = find_line(source, f"at `{field}`")
        return ScenarioError(f"{problem} - at `{field}`" + (f" (line {line})" if line else ""))

    try:
        zone = ZoneInfo(file.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("$.timezone", f"unknown time zone {file.timezone!r}") from None
    start = file.start if file.start.tzinfo else file.start.replace(tzinfo=zone)

    group_ids = {g.id for g in file.groups}
    service_ids = {s.id for s in file.services}
    operators: list[Operator] = []
    seen: set[int] = set()
    raw_ops: list[dict[str, Any]] = []
    for index, shift in enumerate(file.operators):
        for g in shift.groups:
            if g not in group_ids:
                raise fail(f"$.operators[{index}].groups", f"unknown group {g}")
        if shift.token is not None and shift.count > 1 and "{id}" not in shift.token:
            raise fail(
                f"$.operators[{index}].token",
                "with count > 1 the token must contain {id} (tokens must differ)",
            )
        for k in range(shift.count):
            oid = shift.id + k
            if oid in seen:
                raise fail(f"$.operators[{index}].id", f"operator id {oid} is used twice")
            seen.add(oid)
            name = (shift.name or "Operator") + (
                f" {oid}" if shift.count > 1 or not shift.name else ""
            )
            token = (shift.token or "sim-operator-{id}-Wq4Zr8Kx2Lm6Tn9V").replace("{id}", str(oid))
            raw_ops.append(
                {
                    "id": oid,
                    "name": name,
                    "groups": shift.groups,
                    "capacity": shift.capacity,
                    "token": token,
                }
            )
            operators.append(
                Operator(
                    oid,
                    name,
                    token,
                    tuple(shift.groups),
                    shift.capacity,
                    0.0,
                    0.0,
                    (),
                    shift.handle_time,
                    shift.reply_delay,
                    shift.leave,
                )
            )
    for index, arrival in enumerate(file.arrivals):
        if arrival.service not in service_ids:
            raise fail(f"$.arrivals[{index}].service", f"unknown service {arrival.service}")
        for key in arrival.rates:
            if not _RATE_KEY.match(key):
                raise fail(
                    f"$.arrivals[{index}].rates", f'bad hour {key!r} (use "HH" or "HH-HH", 0-24)'
                )
    lo, hi = file.visitors.messages
    if lo > hi:
        raise fail("$.visitors.messages", "the minimum is above the maximum")
    server_config = {
        "server": {
            "host": "127.0.0.1",
            "operator_grace_seconds": file.operator_grace_seconds,
            # The simulated crowd is programs (no Origin) from one address (``--real``): the
            # per-address limits are for strangers, not for a rehearsal.
            "native_visitors": True,
            "native_operators": True,
            "limits": ONE_ADDRESS_CROWD,
        },
        "schedules": [body_of(s) for s in file.schedules],
        "groups": [body_of(g) for g in file.groups],
        "services": [body_of(s) for s in file.services],
        "operators": raw_ops,
    }
    if file.bots:
        server_config["bots"] = [body_of(b) for b in file.bots]
    try:
        config = parse_config(server_config)
    except ConfigError as exc:
        raise ScenarioError(str(exc)) from None
    try:
        bot_plans = resolve(file.bots, file.bot_visitors, file.services)
    except BehaviourError as exc:
        raise fail(exc.field, str(exc)) from None
    trace = None
    if file.arrival_trace is not None:
        trace = _read_trace(Path(base or ".") / file.arrival_trace, service_ids)
    scenario = Scenario(
        name=file.name,
        start=start,
        zone=zone,
        duration=file.duration_hours * 3600,
        seed=file.seed,
        threshold=file.threshold,
        config=config,
        operators=(),
        arrivals=tuple(file.arrivals),
        trace=trace,
        visitors=file.visitors,
        service_names={s.id: s.name for s in file.services},
        group_names={g.id: g.name for g in file.groups},
        bot_plans=bot_plans,
        server_config=server_config,
    )
    shifts = [s for s in file.operators for _ in range(s.count)]
    timed = []
    for op, shift in zip(operators, shifts, strict=True):
        login = scenario.offset_of(shift.login)
        logout = scenario.offset_of(shift.logout)
        if logout <= login:
            logout = scenario.duration
        pauses = tuple((scenario.offset_of(a), scenario.offset_of(b)) for a, b in shift.pauses)
        timed.append(
            Operator(
                op.id,
                op.name,
                op.token,
                op.groups,
                op.capacity,
                login,
                logout,
                pauses,
                op.handle_time,
                op.reply_delay,
                op.leave,
            )
        )
    return _replace_operators(scenario, tuple(timed))


def _replace_operators(s: Scenario, ops: tuple[Operator, ...]) -> Scenario:
    from dataclasses import replace

    return replace(s, operators=ops)


def _read_trace(path: Path, services: set[int]) -> tuple[tuple[float, int], ...]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ScenarioError(f"$.arrival_trace: cannot read {path}: {exc.strerror}") from None
    out = []
    for n, row in enumerate(rows, start=2):
        try:
            offset, service = float(row["offset"]), int(row["service"])
        except (KeyError, TypeError, ValueError):
            raise ScenarioError(f"$.arrival_trace: {path} line {n}: need offset,service") from None
        if service not in services:
            raise ScenarioError(f"$.arrival_trace: {path} line {n}: unknown service {service}")
        out.append((offset, service))
    return tuple(sorted(out))


def find_line(source: str, message: str) -> int | None:
    """The TOML line of the field named in a msgspec message (`` at `$.a[2].b` ``), found by
    walking the path through the text: table headers, array-of-table headers and keys."""
    match = re.search(r"`\$((?:\.[A-Za-z0-9_]+|\[\d+\])*)`", message)
    if not source or not match:
        return None
    parts = re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", match.group(1))
    lines = source.splitlines()
    pos = 0  # line index where the search continues
    found: int | None = None
    prefix: list[str] = []
    i = 0
    while i < len(parts):
        key, _idx = parts[i]
        if not key:
            i += 1
            continue
        prefix.append(key)
        dotted = ".".join(prefix)
        nxt = parts[i + 1][1] if i + 1 < len(parts) and parts[i + 1][1] else None
        if nxt is not None:
            header = re.compile(rf"^\s*\[\[\s*{re.escape(dotted)}\s*\]\]")
            hits = [n for n in range(pos, len(lines)) if header.match(lines[n])]
            if len(hits) > int(nxt):
                pos = found = hits[int(nxt)]
                pos += 1
                i += 2
                continue
        # The table itself, a table below it (``[a.b.c]`` for ``a.b``), or the key.
        pattern = re.compile(
            rf"^\s*(\[\s*{re.escape(dotted)}\s*\]|(\[\s*{re.escape(dotted)}\.)|{re.escape(key)}\s*=)"
        )
        hit = next((n for n in range(pos, len(lines)) if pattern.match(lines[n])), None)
        if hit is None:
            break
        found = hit
        below = pattern.match(lines[hit])
        # A table below: the next part of the path is on the same header line.
        pos = hit if below is not None and below.group(2) else hit + 1
        i += 1 if nxt is None else 2
    return None if found is None else found + 1
