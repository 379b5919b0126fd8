"""How simulated visitors answer a chatbot (F15): a scenario's ``[[bot_visitors]]`` tables,
checked against the scripts they describe, and what a visitor does at each question.

Rules of this module:

* One table per bot (``bot = "id"``). A bot without one gets the defaults: a menu's options
  equally likely ("talk to a person" never chosen), every answer to an ask valid, nobody
  leaves or falls silent, 10 s of think time on average, no limit to the visitor's patience.
* ``nodes.<id>`` is one question of the script. A menu takes ``options`` (option id -> weight;
  ``"@person"`` is "talk to a person", an option left out is never chosen). An ask takes
  ``valid`` (the probability that an answer fits), ``values`` and ``invalid`` (answers that fit
  and answers that do not: a list, equally likely, or a table answer -> weight; left out, made
  up for the ask's input) and ``person`` (the probability of asking for a person instead).
  Both take ``leave`` (end the chat there), ``silent`` (stop answering until the bot's
  inactivity ends the chat) and ``think_time``; ``leave`` and ``silent`` default to the table's.
* Every problem is a :class:`BehaviourError` naming the field, the node and the option. Answers
  listed as fitting must pass the server's own check (:func:`omni.domain.bot.check_answer`) and
  those listed as not fitting must fail it, so a visitor knows, as the server will, whether an
  answer is invalid.
* A visitor draws only from the generator it is given (its own), in a fixed order at each
  question: what to do, the think time, then (menus) the option or (asks) whether the answer
  fits and which one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from omni.domain.bot import PERSON, AskNode, Bot, HandoffNode, InputKind, MenuNode, check_answer
from omni.domain.model import Service
from simulator.draws import Distribution, NonNegative, Probability, Strict

#: Answers: a list (equally likely) or a table answer -> weight.
Weighted = list[str] | dict[str, NonNegative]


class NodeBehaviour(Strict):
    """How visitors answer one question of a script (``[bot_visitors.nodes.<id>]``)."""

    #: Menus: option id -> weight ("@person" too); left out: the script's options, equally.
    options: dict[str, NonNegative] | None = None
    #: Asks: the probability that an answer fits the question (default 1).
    valid: Probability | None = None
    #: Asks: answers that fit; left out, made up for the input (an address, a number...).
    values: Weighted | None = None
    #: Asks: answers that do not fit; left out, made up for the input.
    invalid: Weighted | None = None
    #: Asks: the probability of asking for a person instead of answering (default 0).
    person: Probability | None = None
    #: The probability of ending the chat at this question (default: the table's).
    leave: Probability | None = None
    #: The probability of falling silent here until the bot gives up (default: the table's).
    silent: Probability | None = None
    #: Seconds before each answer here (default: the table's).
    think_time: Distribution | None = None


class BotVisitorsBody(Strict):
    """How visitors behave in one bot (``[[bot_visitors]]``)."""

    bot: str
    #: Seconds before each answer (reading, typing).
    think_time: Distribution = msgspec.field(default_factory=lambda: Distribution(mean=10.0))
    #: Seconds a visitor gives the bot from their arrival, after which they leave at the
    #: question they are at; left out: no limit.
    patience: Distribution | None = None
    #: At every question, the probability of ending the chat there.
    leave: Probability = 0.0
    #: At every question, the probability of falling silent until the bot gives up.
    silent: Probability = 0.0
    #: Node id -> its :class:`NodeBehaviour`, converted by :func:`resolve` so that an error
    #: names the node (msgspec's path shows a table's keys as ``[...]``).
    nodes: dict[str, dict[str, Any]] = {}


class BehaviourError(ValueError):
    """A ``[[bot_visitors]]`` table that does not fit its script: ``field`` is where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


@dataclass(frozen=True, slots=True)
class Action:
    """What a visitor does at a question after ``think`` seconds: ``answer`` with ``option`` (a
    button) or ``text`` (``valid``: it fits the question, by the server's check), ``leave`` (end
    the chat) or fall ``silent``."""

    kind: Literal["answer", "leave", "silent"]
    think: float
    option: str | None = None
    text: str | None = None
    valid: bool = True


@dataclass(frozen=True)
class QuestionPlan:
    """One question's behaviour, resolved: every default filled in."""

    node: MenuNode | AskNode
    think: Distribution
    leave: float
    silent: float
    #: Menus: (option id, weight), "@person" included when it has a weight.
    options: tuple[tuple[str, float], ...] = ()
    #: Asks.
    person: float = 0.0
    valid: float = 1.0
    #: Asks: (answer, weight); empty: made up for the input.
    values: tuple[tuple[str, float], ...] = ()
    invalid: tuple[tuple[str, float], ...] = ()

    def decide(
        self, rng: random.Random, visitor: int, avoid: frozenset[str] = frozenset()
    ) -> Action:
        """What visitor number ``visitor`` does here. ``avoid``: what they will not answer
        again (it led to a closed group): a menu's options, so they choose another or leave
        when none is left; at an ask, anything in it makes them leave."""
        roll = rng.random()
        think = self.think.sample(rng)
        if roll < self.leave:
            return Action("leave", think)
        if roll < self.leave + self.silent:
            return Action("silent", think)
        if isinstance(self.node, MenuNode):
            option = _choose(rng.random(), [(o, 0.0 if o in avoid else w) for o, w in self.options])
            return Action("leave", think) if option is None else Action("answer", think, option)
        if avoid:
            return Action("leave", think)  # sent back here by a closed group: nothing else
        if roll < self.leave + self.silent + self.person:
            return Action("answer", think, PERSON)
        fits = rng.random() < self.valid
        draw = rng.random()
        listed = self.values if fits else self.invalid
        text = _choose(draw, list(listed)) if listed else made_up(self.node, fits, visitor, draw)
        assert text is not None
        return Action("answer", think, text=text, valid=check_answer(self.node, text) is not None)


@dataclass(frozen=True)
class BotPlan:
    """How visitors behave in one bot: every question of its script has a plan."""

    bot: Bot
    patience: Distribution | None
    questions: Mapping[str, QuestionPlan]

    def handoff_group(self, node_id: str | None) -> int | None:
        """The group of a hand-off node (None: not a hand-off node of the script)."""
        try:
            node = self.bot.node(node_id or "")
        except KeyError:
            return None
        return node.group if isinstance(node, HandoffNode) else None


def _choose(draw: float, weighted: Sequence[tuple[str, float]]) -> str | None:
    """The item ``draw`` (uniform in [0, 1)) lands on, by weight; None when all weigh 0."""
    total = sum(w for _, w in weighted)
    if total <= 0:
        return None
    point = draw * total
    for item, weight in weighted:
        if point < weight:
            return item
        point -= weight
    return next(item for item, weight in reversed(weighted) if weight > 0)


def made_up(node: AskNode, fits: bool, visitor: int, draw: float) -> str:
    """An answer to ``node`` that fits its input (or does not), for visitor ``visitor``; ``draw``
    (uniform in [0, 1)) picks among several."""
    kind = node.input
    if kind is InputKind.EMAIL:
        return f"visitor{visitor}@example.com" if fits else f"visitor{visitor} at example.com"
    if kind is InputKind.PHONE:
        return f"+1 555 {visitor % 10000:04d}" if fits else "call me later"
    if kind is InputKind.NUMBER:
        if not fits:
            return "a few"
        low = node.min if node.min is not None else min(1.0, node.max or 1.0)
        high = node.max if node.max is not None else low + 99
        first, last = math.ceil(low), math.floor(high)
        if first > last:
            return repr(float(low))
        return str(min(last, first + int(draw * (last - first + 1))))
    if kind is InputKind.CHOICE:
        if not fits:
            return "none of those"
        return node.choices[min(len(node.choices) - 1, int(draw * len(node.choices)))]
    if not fits:
        raise ValueError("a text ask takes any answer")
    return f"A question from visitor {visitor}"


def _weighted(listed: Weighted | None) -> tuple[tuple[str, float], ...]:
    if listed is None:
        return ()
    if isinstance(listed, list):
        return tuple((answer, 1.0) for answer in listed)
    return tuple(listed.items())


def resolve(
    bots: Sequence[Bot], tables: Sequence[BotVisitorsBody], services: Sequence[Service]
) -> dict[str, BotPlan]:
    """Every bot's plan: its table checked against its script, defaults filled in. Raises
    :class:`BehaviourError` (its ``field`` like ``$.bot_visitors[0].nodes.menu.options``)."""
    by_id = {bot.id: bot for bot in bots}
    given: dict[str, tuple[int, BotVisitorsBody]] = {}
    for index, table in enumerate(tables):
        where = f"$.bot_visitors[{index}].bot"
        if table.bot not in by_id:
            known = ", ".join(repr(b) for b in sorted(by_id)) or "none"
            raise BehaviourError(where, f"unknown bot {table.bot!r} (the scenario's bots: {known})")
        if table.bot in given:
            raise BehaviourError(where, f"bot {table.bot!r} has two [[bot_visitors]] tables")
        given[table.bot] = (index, table)
    plans = {}
    for bot in bots:
        index, table = given.get(bot.id, (-1, BotVisitorsBody(bot=bot.id)))
        # "Talk to a person" is on offer only where every service running the bot offers it.
        refusing = sorted(s.id for s in services if s.bot == bot.id and not s.bot_person)
        questions = {}
        for node_id, body in table.nodes.items():
            field = f"$.bot_visitors[{index}].nodes.{node_id}"
            try:
                behaviour = msgspec.convert(body, NodeBehaviour)
            except msgspec.ValidationError as exc:
                message, _, where = str(exc).rpartition(" - at `$")
                if not message:
                    message, where = str(exc), "`"
                raise BehaviourError(field + where.removesuffix("`"), message) from None
            questions[node_id] = _question(bot, node_id, behaviour, table, refusing, field)
        for node in bot.nodes:
            if isinstance(node, MenuNode | AskNode) and node.id not in questions:
                questions[node.id] = _question(bot, node.id, NodeBehaviour(), table, [], "")
        plans[bot.id] = BotPlan(bot, table.patience, questions)
    return plans


def _question(
    bot: Bot,
    node_id: str,
    behaviour: NodeBehaviour,
    table: BotVisitorsBody,
    refusing: list[int],
    field: str,
) -> QuestionPlan:
    if node_id not in {n.id for n in bot.nodes}:
        raise BehaviourError(field, f"bot {bot.id!r} has no node {node_id!r}")
    node = bot.node(node_id)
    if not isinstance(node, MenuNode | AskNode):
        kind = type(node).__name__.removesuffix("Node").lower()
        raise BehaviourError(
            field, f"node {node_id!r} is a {kind}: only a menu or an ask takes answers"
        )

    def person_refused(key: str) -> BehaviourError:
        return BehaviourError(
            f"{field}.{key}",
            f"node {node_id!r}: service {refusing[0]} runs bot {bot.id!r} without "
            "bot_person, so its visitors cannot ask for a person",
        )

    leave = table.leave if behaviour.leave is None else behaviour.leave
    silent = table.silent if behaviour.silent is None else behaviour.silent
    think = behaviour.think_time or table.think_time
    if isinstance(node, MenuNode):
        for key in ("valid", "values", "invalid", "person"):
            if getattr(behaviour, key) is not None:
                raise BehaviourError(
                    f"{field}.{key}",
                    f"node {node_id!r} is a menu: it takes options (id -> weight), not {key}",
                )
        ids = [o.id for o in node.options]
        if behaviour.options is None:
            options = tuple((i, 1.0) for i in ids)
        else:
            for option in behaviour.options:
                if option not in (*ids, PERSON):
                    known = ", ".join(repr(i) for i in (*ids, PERSON))
                    raise BehaviourError(
                        f"{field}.options",
                        f"node {node_id!r} has no option {option!r} (its options: {known})",
                    )
            if behaviour.options.get(PERSON, 0) > 0 and refusing:
                raise person_refused("options")
            options = tuple((i, w) for i, w in behaviour.options.items())
            if sum(w for _, w in options) <= 0:
                raise BehaviourError(f"{field}.options", f"node {node_id!r}: every weight is 0")
        if leave + silent > 1:
            raise BehaviourError(field, f"node {node_id!r}: leave + silent is above 1")
        return QuestionPlan(node, think, leave, silent, options=options)
    if behaviour.options is not None:
        raise BehaviourError(
            f"{field}.options",
            f"node {node_id!r} is an ask: it takes valid, values and invalid, not options",
        )
    person = behaviour.person or 0.0
    if person > 0 and refusing:
        raise person_refused("person")
    if leave + silent + person > 1:
        raise BehaviourError(field, f"node {node_id!r}: leave + silent + person is above 1")
    valid = 1.0 if behaviour.valid is None else behaviour.valid
    values, invalid = _weighted(behaviour.values), _weighted(behaviour.invalid)
    for key, listed, fits in (("values", values, True), ("invalid", invalid, False)):
        if getattr(behaviour, key) is not None and sum(w for _, w in listed) <= 0:
            raise BehaviourError(f"{field}.{key}", f"node {node_id!r}: {key} lists no answer")
        for answer, _ in listed:
            if (check_answer(node, answer) is not None) != fits:
                raise BehaviourError(
                    f"{field}.{key}",
                    f"node {node_id!r}: {answer!r} "
                    + (
                        f"does not fit its input ({node.input.value}): list it under invalid"
                        if fits
                        else f"fits its input ({node.input.value}): list it under values"
                    ),
                )
    # The answers made up where none are listed must come out as meant.
    for listed, fits, share in ((values, True, valid), (invalid, False, 1 - valid)):
        if listed or share <= 0:
            continue
        key = "values" if fits else "invalid"
        try:
            samples = [made_up(node, fits, 1, draw) for draw in (0.0, 0.999)]
        except ValueError:
            raise BehaviourError(
                f"{field}.valid",
                f"node {node_id!r} takes any text, so no answer is invalid: valid must be 1",
            ) from None
        if any((check_answer(node, s) is not None) != fits for s in samples):
            raise BehaviourError(
                f"{field}.{key}", f"node {node_id!r}: list the answers ({key}) for its input"
            )
    return QuestionPlan(
        node,
        think,
        leave,
        silent,
        person=person,
        valid=valid,
        values=values,
        invalid=invalid,
    )
