"""Contact-center reports over conversations (pure).

Rules: a report counts the conversations *created* in its period, per service and per group
(the group a conversation was last in):

* offered — entered a queue (not out of hours);
* answered — an operator took it (``answered_at`` set);
* abandoned — the visitor left before any operator took it;
* out_of_hours — arrived while closed (even if an operator resumed it later: it was never
  offered to a queue, so it counts in neither the service level nor the speed of answer);
* service_level — :func:`service_level`: answered within ``threshold`` seconds of arrival /
  (answered + abandoned), None if neither; conversations still waiting count in neither;
* asa — average speed of answer: mean seconds from entering a queue (arrival, or the bot's
  hand-off) to first answer;
* aht — average handle time: mean seconds from first answer to the end, over ended ones;
* bot — the conversations that met the service's chatbot (F15): how many, how many it
  finished itself without a person (``contained``, and ``containment`` the share), the
  hand-offs per group (to a group of the script, or to whoever was open when the visitor
  asked for a person) and the drop-offs per node (the question where the visitor ended,
  went away or fell silent). A conversation still with the bot, or that met none, is in no
  queue: it counts in neither ``offered`` nor the service level;
* files_sent, file_bytes — the files a message carried (claimed attachments; pending uploads
  do not count) in those conversations, and their bytes: in all and per service
  (``Store.attachment_figures``, one query).

Paused time per operator and pause reason (:func:`paused_time`) counts the seconds of each
:class:`Pause` that fall inside the period, open pauses up to "now". The pauses are stored
(``Store.pauses_between``; docs/decisions.md, issue 14), so a restart keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from omni.domain.bot import BotState
from omni.domain.conversation import Conversation, Status

#: The service level's threshold, in seconds, where none is asked for (the reports' default,
#: the supervisor's board).
DEFAULT_THRESHOLD = 20


class Outcome(Protocol):
    """What a report reads of a conversation (a :class:`Conversation` is one)."""

    @property
    def status(self) -> Status: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def answered_at(self) -> datetime | None: ...

    @property
    def ended_at(self) -> datetime | None: ...

    @property
    def arrived_out_of_hours(self) -> bool: ...

    @property
    def waiting_since(self) -> datetime: ...

    @property
    def bot(self) -> BotState | None: ...


def service_level(answered_within: int, answered: int, abandoned: int) -> float | None:
    """The service level: the share of the conversations that reached an outcome (an operator
    answered, or the visitor left unanswered) that were answered within the threshold, in
    [0, 1]; None when no conversation reached an outcome.

    The one definition for every report (the admin API's and the simulator's), the usual
    contact-center one: ``answered_within / (answered + abandoned)``. Visitors still waiting at
    the end of the period count in neither, because their outcome is not known yet: dividing by
    everyone offered would count a visitor who arrived a second before the period ended as
    missed, though they may be answered well within the threshold.
    """
    if not 0 <= answered_within <= answered or abandoned < 0:
        raise ValueError(
            f"impossible counts: {answered_within} answered within the threshold, "
            f"{answered} answered, {abandoned} abandoned"
        )
    outcomes = answered + abandoned
    return answered_within / outcomes if outcomes else None


@dataclass
class Tally:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    out_of_hours: int = 0
    answered_in_threshold: int = 0
    waits: list[float] = field(default_factory=list)
    handles: list[float] = field(default_factory=list)
    bot: BotTally = field(default_factory=lambda: BotTally())

    def add(self, conv: Outcome, threshold: float) -> None:
        if conv.bot is not None:
            self.bot.add(conv.bot)
        if conv.arrived_out_of_hours or conv.status is Status.OUT_OF_HOURS:
            self.out_of_hours += 1
            return
        if conv.bot is not None and conv.bot.outcome not in ("handoff", "person"):
            return  # never queued: still with the bot, finished by it, or dropped there
        self.offered += 1
        if conv.answered_at is not None:
            self.answered += 1
            wait = (conv.answered_at - conv.waiting_since).total_seconds()
            self.waits.append(wait)
            if wait <= threshold:
                self.answered_in_threshold += 1
            if conv.ended_at is not None:
                self.handles.append((conv.ended_at - conv.answered_at).total_seconds())
        elif conv.status is Status.ABANDONED:
            self.abandoned += 1

    def figures(self) -> dict[str, float | int | None]:
        level = service_level(self.answered_in_threshold, self.answered, self.abandoned)
        return {
            "offered": self.offered,
            "answered": self.answered,
            "abandoned": self.abandoned,
            "out_of_hours": self.out_of_hours,
            "service_level": None if level is None else round(level, 4),
            "asa_seconds": round(sum(self.waits) / len(self.waits), 3) if self.waits else None,
            "aht_seconds": (
                round(sum(self.handles) / len(self.handles), 3) if self.handles else None
            ),
        }


@dataclass
class BotTally:
    conversations: int = 0
    contained: int = 0
    handoffs: dict[int, int] = field(default_factory=dict)
    dropoffs: dict[str, int] = field(default_factory=dict)

    def add(self, state: BotState) -> None:
        self.conversations += 1
        if state.outcome == "ended":
            self.contained += 1
        elif state.outcome in ("handoff", "person") and state.group is not None:
            self.handoffs[state.group] = self.handoffs.get(state.group, 0) + 1
        elif state.outcome == "dropped" and state.node is not None:
            self.dropoffs[state.node] = self.dropoffs.get(state.node, 0) + 1

    def figures(self) -> dict[str, object]:
        return {
            "conversations": self.conversations,
            "contained": self.contained,
            "containment": (
                round(self.contained / self.conversations, 4) if self.conversations else None
            ),
            "handoffs": {str(k): v for k, v in sorted(self.handoffs.items())},
            "dropoffs": dict(sorted(self.dropoffs.items())),
        }


@dataclass(frozen=True)
class Report:
    threshold: float
    #: A service's and the total's figures also hold ``files_sent``, ``file_bytes`` and ``bot``.
    services: dict[int, dict[str, Any]]
    groups: dict[int, dict[str, float | int | None]]
    total: dict[str, Any]


def report(
    conversations: Iterable[Conversation],
    threshold: float,
    files: Mapping[int, tuple[int, int]] | None = None,
) -> Report:
    """The report over ``conversations``; ``files``: the files sent in them and their bytes,
    by service (``Store.attachment_figures`` over the same period), in the service figures
    and the total (not the groups')."""
    services: dict[int, Tally] = {}
    groups: dict[int, Tally] = {}
    total = Tally()
    for conv in conversations:
        total.add(conv, threshold)
        services.setdefault(conv.service_id, Tally()).add(conv, threshold)
        if conv.group_id is not None:
            groups.setdefault(conv.group_id, Tally()).add(conv, threshold)
    files = files or {}

    def with_extras(tally: Tally, sent: tuple[int, int]) -> dict[str, Any]:
        return {
            **tally.figures(),
            "files_sent": sent[0],
            "file_bytes": sent[1],
            "bot": tally.bot.figures(),
        }

    return Report(
        threshold=threshold,
        services={k: with_extras(v, files.get(k, (0, 0))) for k, v in sorted(services.items())},
        groups={k: v.figures() for k, v in sorted(groups.items())},
        total=with_extras(
            total,
            (sum(n for n, _ in files.values()), sum(b for _, b in files.values())),
        ),
    )


@dataclass(frozen=True, slots=True)
class Pause:
    """One pause of an operator: from ``start`` until ``end`` (None: still paused)."""

    operator_id: int
    reason: str | None
    start: datetime
    end: datetime | None = None


def paused_time(
    pauses: Iterable[Pause], start: datetime, end: datetime, now: datetime
) -> dict[int, dict[str | None, float]]:
    """Seconds each operator was paused within ``[start, end)``, by pause reason (None:
    unspecified); a pause still open counts up to ``now``. Operators with none are left out."""
    found: dict[int, dict[str | None, float]] = {}
    for pause in pauses:
        until = min(pause.end if pause.end is not None else now, end)
        seconds = (until - max(pause.start, start)).total_seconds()
        if seconds > 0:
            reasons = found.setdefault(pause.operator_id, {})
            reasons[pause.reason] = reasons.get(pause.reason, 0.0) + seconds
    return {
        operator_id: {reason: round(s, 3) for reason, s in reasons.items()}
        for operator_id, reasons in sorted(found.items())
    }
