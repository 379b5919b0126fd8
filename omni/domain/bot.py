"""The chatbot (F15): scripts as data, their validation, and the interpreter — pure.

Rules of this module:

* A :class:`Bot` is the configuration entity itself (the admin API's body, the TOML table, the
  stored JSON): a start node and nodes of six kinds, each a tagged msgspec struct. Decoding
  checks the script as a whole (:meth:`Bot.__post_init__`): every reference resolves, every
  node is reachable from the start, every node can still reach a hand-off or an end, and every
  loop passes through a question (a menu or an ask), whose answer is the visitor's way out.
  The errors name the node. That the groups exist and that the service links them is the
  :class:`~omni.domain.model.Directory`'s check, which knows both.
* The interpreter is two functions, :func:`begin` and :func:`answer`. They read the script,
  the conversation's :class:`BotState` and a :class:`World` (what the interpreter may ask of
  the configuration and the moment: is a group open, when does it open, does the service take
  anyone now, the local time) and return a :class:`Step`: what the bot says, in order, and
  where the conversation goes next — waiting for an answer at a question, handed to a group,
  handed to whoever is open (the visitor asked for a person), finished by the bot, or out of
  hours. They never loop: a run visits at most as many nodes as the script has, because the
  validator refuses loops without a question.
* A conversation keeps the script it started with (:attr:`BotState.script`): an administrator
  who edits a bot changes the conversations that start afterwards, never one under way.
* Answers are checked here (e-mail, phone, number, choice); a bad one gets the node's retry
  text, and after ``attempts`` bad answers the node's ``otherwise`` (when it has one — a text
  ask has none: any text fits). A typed answer names an option by its label (any case) before
  its number, so options labelled with numbers mean what they say. A collected e-mail address
  or phone number fits where the visitor's own are kept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from enum import StrEnum
from typing import Annotated, Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from omni.domain.values import Id, Key, Name, Seconds, Text, WallTime

#: The option every question offers when the service lets visitors ask for a person: it can
#: be no option's id (``@`` is not allowed in a :data:`Key`).
PERSON = "@person"
#: Most nodes in a script.
MAX_NODES = 200
#: Longest free answer, in characters (what a visitor's field holds).
MAX_ANSWER = 500


class _Node(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    id: Key


class MessageNode(_Node, frozen=True, tag="message"):
    """Say something and go on to ``next``."""

    text: Text
    next: Key


class MenuOption(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Key
    label: Name
    next: Key


class MenuNode(_Node, frozen=True, tag="menu"):
    """Ask the visitor to pick one of ``options`` (a button each; typing the label or its
    number works too)."""

    text: Text
    options: Annotated[tuple[MenuOption, ...], msgspec.Meta(min_length=1, max_length=20)]
    #: Said when a typed answer matches no option.
    retry: Text = "Please choose one of the options."


class InputKind(StrEnum):
    TEXT = "text"
    EMAIL = "email"
    PHONE = "phone"
    NUMBER = "number"
    CHOICE = "choice"


class AskNode(_Node, frozen=True, tag="ask"):
    """Collect ``field`` from the visitor, checked as ``input`` says, then go on to ``next``."""

    text: Text
    field: Key
    next: Key
    input: InputKind = InputKind.TEXT
    #: The answers a ``choice`` accepts.
    choices: Annotated[tuple[Name, ...], msgspec.Meta(max_length=20)] = ()
    #: Bounds of a ``number``.
    min: float | None = None
    max: float | None = None
    #: Said when an answer does not fit.
    retry: Text = "Sorry, that does not look right. Please try again."
    #: After this many answers that do not fit, go to ``otherwise`` (if set; else keep asking).
    attempts: Annotated[int, msgspec.Meta(ge=1, le=20)] = 3
    otherwise: Key | None = None


class FieldRule(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", tag="field"
):
    """The collected (or typed-in) ``field`` is one of ``values`` (compared without regard to
    case or surrounding spaces)."""

    field: Key
    values: Annotated[tuple[Name, ...], msgspec.Meta(min_length=1, max_length=50)]
    next: Key


class GroupOpenRule(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", tag="group_open"
):
    """The group is open now by its own schedule (the service's link to it, F5)."""

    group: Id
    next: Key


class TimeRule(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind", tag="time"
):
    """The local time (the bot's ``timezone``) is in ``[from, to)``; ``from`` after ``to``
    spans midnight."""

    start: WallTime = msgspec.field(name="from")
    end: WallTime = msgspec.field(name="to")
    next: Key = msgspec.field(name="next")

    def __post_init__(self) -> None:
        for text in (self.start, self.end):
            _wall(text)
        if self.start == self.end:
            raise ValueError(f"a time rule from {self.start} to {self.end} covers nothing")

    def holds(self, local: time) -> bool:
        start, end = _wall(self.start), _wall(self.end)
        if start < end:
            return start <= local < end
        return local >= start or local < end


Rule = FieldRule | GroupOpenRule | TimeRule


class ConditionNode(_Node, frozen=True, tag="condition"):
    """Go to the ``next`` of the first rule that holds, else to ``otherwise``."""

    rules: Annotated[tuple[Rule, ...], msgspec.Meta(min_length=1, max_length=20)]
    otherwise: Key


class HandoffNode(_Node, frozen=True, tag="handoff"):
    """Hand the conversation to ``group``'s queue (saying ``text`` first, if any) — or, when
    the group is closed by its schedule, the service's "group closed" message."""

    group: Id
    text: Text = ""


class EndNode(_Node, frozen=True, tag="end"):
    """The bot finishes the conversation itself, saying ``text``."""

    text: Text


Node = MessageNode | MenuNode | AskNode | ConditionNode | HandoffNode | EndNode
#: Nodes that wait for the visitor.
Question = MenuNode | AskNode


def _wall(text: str) -> time:
    hours, _, minutes = text.partition(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"invalid time {text!r}: expected HH:MM from 00:00 to 23:59")
    return time(h, m)


def successors(node: Node) -> tuple[str, ...]:
    """The nodes ``node`` can lead to."""
    if isinstance(node, MessageNode):
        return (node.next,)
    if isinstance(node, MenuNode):
        return tuple(o.next for o in node.options)
    if isinstance(node, AskNode):
        return (node.next,) if node.otherwise is None else (node.next, node.otherwise)
    if isinstance(node, ConditionNode):
        return (*(r.next for r in node.rules), node.otherwise)
    return ()


class Bot(msgspec.Struct, frozen=True, forbid_unknown_fields=True, dict=True):
    """A chatbot script (F15), linked to services by their ``bot``."""

    id: Key
    name: Name
    start: Key
    nodes: Annotated[tuple[Node, ...], msgspec.Meta(min_length=1, max_length=MAX_NODES)]
    #: The zone of the time-of-day conditions.
    timezone: Name = "UTC"
    #: A visitor silent this long at a question drops out of the bot (the conversation ends).
    inactivity: Seconds = 300.0
    #: The label of the option that hands the visitor to a person (services allow it or not).
    person_label: Name = "Talk to a person"

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"bot {self.id}: unknown time zone {self.timezone!r}: expected an IANA name"
            ) from None
        if (problem := script_problem(self)) is not None:
            raise ValueError(f"bot {self.id}: {problem}")

    def node(self, node_id: str) -> Node:
        return self._by_id[node_id]

    @property
    def _by_id(self) -> dict[str, Node]:
        cached: dict[str, Node] | None = self.__dict__.get("_nodes")
        if cached is None:
            cached = self.__dict__["_nodes"] = {n.id: n for n in self.nodes}
        return cached

    def groups(self) -> frozenset[int]:
        """The groups the script hands off to or asks about."""
        found: set[int] = set()
        for node in self.nodes:
            if isinstance(node, HandoffNode):
                found.add(node.group)
            elif isinstance(node, ConditionNode):
                found.update(r.group for r in node.rules if isinstance(r, GroupOpenRule))
        return frozenset(found)

    def group_nodes(self) -> list[tuple[str, int]]:
        """(node id, group) of every reference to a group, for the directory's checks."""
        found: list[tuple[str, int]] = []
        for node in self.nodes:
            if isinstance(node, HandoffNode):
                found.append((node.id, node.group))
            elif isinstance(node, ConditionNode):
                found += [(node.id, r.group) for r in node.rules if isinstance(r, GroupOpenRule)]
        return found


def script_problem(bot: Bot) -> str | None:
    """What is wrong with the script's shape (None: nothing), naming the node."""
    by_id: dict[str, Node] = {}
    for node in bot.nodes:
        if node.id in by_id:
            return f"node {node.id!r} is defined twice"
        by_id[node.id] = node
    if bot.start not in by_id:
        return f"start: there is no node {bot.start!r}"
    for node in bot.nodes:
        for target in successors(node):
            if target not in by_id:
                return f"node {node.id!r} leads to {target!r}, which is not a node"
        if isinstance(node, MenuNode):
            ids = [o.id for o in node.options]
            if len(set(ids)) != len(ids):
                return f"node {node.id!r}: two options have the same id"
        if isinstance(node, AskNode):
            if node.input is InputKind.CHOICE and len(node.choices) < 2:
                return f"node {node.id!r}: a choice needs at least two choices"
            if node.input is not InputKind.CHOICE and node.choices:
                return f"node {node.id!r}: only a choice has choices"
            if node.input is not InputKind.NUMBER and (node.min, node.max) != (None, None):
                return f"node {node.id!r}: only a number has min and max"
            if any(b is not None and not math.isfinite(b) for b in (node.min, node.max)):
                return f"node {node.id!r}: min and max must be finite numbers"
            if node.min is not None and node.max is not None and node.min > node.max:
                return f"node {node.id!r}: min is above max"
            if node.input is InputKind.TEXT and node.otherwise is not None:
                # Any text fits, so no answer is ever a bad one: an otherwise would look like
                # a way out (the checks below would count it as one) that no visitor can take.
                return f"node {node.id!r}: a text answer always fits, so otherwise is never taken"
    # Every node reachable from the start.
    reached = {bot.start}
    frontier = [bot.start]
    while frontier:
        for target in successors(by_id[frontier.pop()]):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for node in bot.nodes:
        if node.id not in reached:
            return f"node {node.id!r} cannot be reached from the start"
    # Every node can still reach a hand-off or an end (a loop has a way out).
    ends = {n.id for n in bot.nodes if isinstance(n, HandoffNode | EndNode)}
    finishing = set(ends)
    changed = True
    while changed:
        changed = False
        for node in bot.nodes:
            if node.id not in finishing and any(t in finishing for t in successors(node)):
                finishing.add(node.id)
                changed = True
    for node in bot.nodes:
        if node.id not in finishing:
            return (
                f"node {node.id!r} never leads to a hand-off or an end "
                "(a loop without a way out, or a path that stops)"
            )
    # Every loop passes through a question: among messages and conditions, no cycle.
    silent = {n.id for n in bot.nodes if isinstance(n, MessageNode | ConditionNode)}
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def cycle_from(start: str) -> str | None:
        stack = [(start, iter(t for t in successors(by_id[start]) if t in silent))]
        state[start] = 1
        while stack:
            current, targets = stack[-1]
            step = next(targets, None)
            if step is None:
                state[current] = 2
                stack.pop()
            elif state.get(step) == 1:
                return step
            elif step not in state:
                state[step] = 1
                stack.append((step, iter(t for t in successors(by_id[step]) if t in silent)))
        return None

    for node_id in sorted(silent):
        if node_id not in state and (looping := cycle_from(node_id)) is not None:
            return (
                f"node {looping!r} is on a loop without a question (menu or ask): "
                "the bot would go round it for ever"
            )
    return None


# --- the conversation's side ------------------------------------------------------------------

#: How a conversation's time in the bot came out: handed to a group, handed to whoever is open
#: at the visitor's request, finished by the bot, dropped (the visitor left or fell silent), or
#: sent down the out-of-hours path (nothing open).
BotOutcome = Literal["handoff", "person", "ended", "dropped", "out_of_hours"]


class BotState(msgspec.Struct, omit_defaults=True):
    """A conversation's time in the bot, kept with the conversation (stored as JSON)."""

    #: The script it started with; None once the bot is done with the conversation (the
    #: record then keeps only what reports read).
    script: Bot | None
    #: The question waiting for an answer, or the last node once done.
    node: str | None = None
    #: Answers that did not fit at this question so far.
    attempts: int = 0
    #: What the visitor gave (ask nodes' fields).
    fields: dict[str, str] = {}
    #: The last question asked: where a closed group sends the visitor back.
    last_question: str | None = None
    outcome: BotOutcome | None = None
    #: The group it was handed to.
    group: int | None = None

    def copy(self) -> BotState:
        """A copy that shares nothing mutable with this one (the script is immutable)."""
        return msgspec.structs.replace(self, fields=dict(self.fields))


class World(Protocol):
    """What the interpreter may ask of the configuration at the moment of a step."""

    def group_open(self, group_id: int) -> bool:
        """Whether the service's link to the group is open now (and the service)."""
        ...

    def group_opens_at(self, group_id: int) -> datetime | None:
        """When a closed group opens next (None: not within the look-ahead)."""
        ...

    def anyone_open(self) -> bool:
        """Whether any group of the service takes conversations now."""
        ...

    def local_time(self, zone: str) -> time:
        """The wall time now in ``zone``."""
        ...

    def visitor_field(self, name: str) -> str | None:
        """What the visitor typed in the form for ``name`` (``email``, ``phone`` or one of
        their ``fields``), for conditions on a field the bot did not ask."""
        ...

    @property
    def group_closed_message(self) -> str:
        """The service's "group closed" text (F5)."""
        ...


@dataclass(frozen=True, slots=True)
class Say:
    """A ``bot`` frame: text, the options as (id, label), what a free answer is, the node it
    comes from, and — after a closed group — when that group opens."""

    text: str
    node: str
    options: tuple[tuple[str, str], ...] = ()
    input: InputKind | None = None
    opens_at: datetime | None = None


Finished = Literal["handoff", "person", "ended", "out_of_hours"]
Next = Literal["wait", Finished]


@dataclass(frozen=True, slots=True)
class Step:
    """What one turn of the bot does: ``says`` in order, then ``next``: ``wait`` at
    ``state.node``; ``handoff`` to ``group``; ``person`` (whoever is open); ``ended`` (the bot
    finished it); ``out_of_hours`` (nothing is open)."""

    says: list[Say] = field(default_factory=list)
    next: Next = "wait"
    group: int | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """The visitor's answer: an option's id (a button), or text they typed."""

    option: str | None = None
    text: str | None = None


class BadReply(ValueError):
    """An answer the interpreter cannot take at all (not a retry: an option of another
    question, an empty text)."""


def begin(state: BotState, world: World, *, person: bool) -> Step:
    """Run the script from its start (``person``: the service lets visitors ask for one)."""
    script = state.script
    assert script is not None
    return _run(state, script, script.start, world, person, [])


def answer(state: BotState, reply: Reply, world: World, *, person: bool) -> tuple[str, Step]:
    """Take the visitor's ``reply`` at the waiting question: returns the reply as the
    conversation shows it (an option's label, or the text) and the next step. Raises
    :class:`BadReply` for a reply that makes no sense here, before changing anything."""
    script = state.script
    assert script is not None and state.node is not None
    node = script.node(state.node)
    assert isinstance(node, MenuNode | AskNode)
    if reply.option is not None:
        if reply.option == PERSON:
            if not person:
                raise BadReply("this service does not hand visitors to a person from the bot")
            return script.person_label, _finish(state, node.id, "person")
        chosen = _option(node, reply.option)
        if chosen is None:
            raise BadReply(f"{reply.option!r} is not an option of this question")
        shown, target, value = chosen
        if isinstance(node, AskNode):
            state.fields[node.field] = value
        return shown, _run(state, script, target, world, person, [])
    text = (reply.text or "").strip()
    if not text:
        raise BadReply("an answer needs an option or some text")
    if len(text) > MAX_ANSWER:
        raise BadReply(f"an answer has at most {MAX_ANSWER} characters")
    if person and text.casefold() == script.person_label.strip().casefold():
        return text, _finish(state, node.id, "person")
    if isinstance(node, MenuNode):
        picked = _match(text, [(o.id, o.label) for o in node.options])
        if picked is not None:
            target = next(o.next for o in node.options if o.id == picked)
            return text, _run(state, script, target, world, person, [])
        return text, _retry(state, script, node, world, person)
    kept = check_answer(node, text)
    if kept is None:
        return text, _retry(state, script, node, world, person)
    state.fields[node.field] = kept
    return text, _run(state, script, node.next, world, person, [])


def question_of(state: BotState, *, person: bool) -> Say:
    """The waiting question as a ``bot`` frame would ask it (to ask it again)."""
    assert state.script is not None and state.node is not None
    node = state.script.node(state.node)
    assert isinstance(node, MenuNode | AskNode)
    return _ask(state.script, node, node.text, person)


def dropped(state: BotState) -> None:
    """The visitor left the bot (ended, went away, or fell silent) at its waiting question."""
    state.outcome = "dropped"
    state.script = None


def _option(node: MenuNode | AskNode, option: str) -> tuple[str, str, str] | None:
    """(label shown, next node, value kept) of an option id of ``node``."""
    if isinstance(node, MenuNode):
        found = next((o for o in node.options if o.id == option), None)
        return None if found is None else (found.label, found.next, found.label)
    if node.input is InputKind.CHOICE:
        for index, choice in enumerate(node.choices, 1):
            if option == str(index):
                return choice, node.next, choice
    return None


def _match(text: str, options: list[tuple[str, str]]) -> str | None:
    """The option a typed answer names: its label (any case, padding aside), else its number.
    Labels come first: of choices "0", "1", "2", an answer "1" is the choice "1", not the
    first one."""
    folded = text.casefold()
    for option_id, label in options:
        if folded == label.strip().casefold():
            return option_id
    for index, (option_id, _) in enumerate(options, 1):
        if text == str(index):
            return option_id
    return None


_NUMBER = re.compile(r"^[+-]?[0-9]{1,15}(?:[.,][0-9]{1,15})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE = re.compile(r"^\+?[0-9 ().-]+$")
#: Longest e-mail address and phone number taken: what the visitor's own ``email`` and
#: ``phone`` hold (:class:`~omni.domain.protocol.VisitorInfo`), which collected ones become.
MAX_EMAIL = 320
MAX_PHONE = 64


def is_email(text: str) -> bool:
    """Whether ``text`` is taken as an e-mail address (by an ``email`` ask, and as the
    visitor's own)."""
    return len(text) <= MAX_EMAIL and _EMAIL.match(text) is not None


def is_phone(text: str) -> bool:
    """Whether ``text`` is taken as a phone number: 7 to 15 digits, with ``+ ( ) . -`` and
    spaces (by a ``phone`` ask, and as the visitor's own)."""
    digits = sum(c.isdigit() for c in text)
    return len(text) <= MAX_PHONE and _PHONE.match(text) is not None and 7 <= digits <= 15


def check_answer(node: AskNode, text: str) -> str | None:
    """The value kept for a typed answer, or None when it does not fit the node's input."""
    kind = node.input
    if kind is InputKind.TEXT:
        return text
    if kind is InputKind.EMAIL:
        return text if is_email(text) else None
    if kind is InputKind.PHONE:
        return text if is_phone(text) else None
    if kind is InputKind.NUMBER:
        # Plain decimal numbers as people type them (a comma or a point), ASCII digits only:
        # not Python's `1_000`, `1e9`, `nan` or other scripts' digits.
        if _NUMBER.match(text) is None:
            return None
        number = float(text.replace(",", "."))
        if (node.min is not None and number < node.min) or (
            node.max is not None and number > node.max
        ):
            return None
        return text
    picked = _match(text, [(c, c) for c in node.choices])
    return picked


def _retry(state: BotState, script: Bot, node: Question, world: World, person: bool) -> Step:
    state.attempts += 1
    if isinstance(node, AskNode) and node.otherwise is not None and state.attempts >= node.attempts:
        return _run(state, script, node.otherwise, world, person, [])
    return Step([_ask(script, node, node.retry, person)], "wait")


def _ask(script: Bot, node: Question, text: str, person: bool) -> Say:
    options: list[tuple[str, str]]
    kind: InputKind | None = None
    if isinstance(node, MenuNode):
        options = [(o.id, o.label) for o in node.options]
    else:
        kind = node.input
        options = [(str(i), c) for i, c in enumerate(node.choices, 1)]
    if person:
        options.append((PERSON, script.person_label))
    return Say(text, node.id, tuple(options), kind)


def _finish(state: BotState, node_id: str, outcome: Finished, group: int | None = None) -> Step:
    state.node, state.outcome, state.group = node_id, outcome, group
    state.script = None
    return Step([], outcome, group)


def _run(
    state: BotState, script: Bot, node_id: str, world: World, person: bool, says: list[Say]
) -> Step:
    """Walk from ``node_id`` until a question, a hand-off or an end."""
    for _ in range(len(script.nodes) + 1):
        node = script.node(node_id)
        if isinstance(node, MessageNode):
            says.append(Say(node.text, node.id))
            node_id = node.next
        elif isinstance(node, ConditionNode):
            node_id = _decide(node, state.fields, script, world)
        elif isinstance(node, MenuNode | AskNode):
            state.node, state.attempts, state.last_question = node.id, 0, node.id
            says.append(_ask(script, node, node.text, person))
            return Step(says, "wait")
        elif isinstance(node, EndNode):
            if node.text:
                says.append(Say(node.text, node.id))
            _finish(state, node.id, "ended")
            return Step(says, "ended")
        else:
            return _hand_off(state, script, node, world, person, says)
    raise AssertionError(f"bot {script.id}: a run went round a loop without a question")


def _hand_off(
    state: BotState, script: Bot, node: HandoffNode, world: World, person: bool, says: list[Say]
) -> Step:
    if world.group_open(node.group):
        if node.text:
            says.append(Say(node.text, node.id))
        _finish(state, node.id, "handoff", node.group)
        return Step(says, "handoff", node.group)
    if not world.anyone_open():
        _finish(state, node.id, "out_of_hours")
        return Step(says, "out_of_hours")
    says.append(Say(world.group_closed_message, node.id, opens_at=world.group_opens_at(node.group)))
    back = state.last_question
    if back is None:
        # Nothing to go back to: the script went straight to the closed group.
        _finish(state, node.id, "out_of_hours")
        return Step(says, "out_of_hours")
    question = script.node(back)
    assert isinstance(question, MenuNode | AskNode)
    state.node, state.attempts = back, 0
    says.append(_ask(script, question, question.text, person))
    return Step(says, "wait")


def _decide(node: ConditionNode, fields: Mapping[str, str], script: Bot, world: World) -> str:
    for rule in node.rules:
        if isinstance(rule, FieldRule):
            value = fields.get(rule.field)
            if value is None:
                value = world.visitor_field(rule.field)
            if value is not None and value.strip().casefold() in {
                v.strip().casefold() for v in rule.values
            }:
                return rule.next
        elif isinstance(rule, GroupOpenRule):
            if world.group_open(rule.group):
                return rule.next
        elif rule.holds(world.local_time(script.timezone)):
            return rule.next
    return node.otherwise
