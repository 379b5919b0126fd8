"""Properties of the chatbot (issue 16, F15): the script validator and the interpreter of
omni/domain/bot.py, alone and inside the conversation machine (omni/domain/conversation.py).

Rules of this module:

* :func:`scripts` draws valid scripts by construction. Nodes are numbered; every node but the
  first has a parent among the nodes before it (so all are reachable), every node that is not a
  hand-off or an end leads to some node after it and the last node is one (so every node can
  reach a finish), and a message or a condition leads backwards only to a question (so every
  loop passes through a menu or an ask). The body is shuffled before decoding.
* :func:`broken` takes a valid script and gives it one defect; decoding must refuse it and name
  the node at fault.
* The interpreter runs against :class:`FakeWorld` (drawn anew for every turn); the conversation
  machine against a real :class:`~omni.domain.model.Directory` whose links keep hours of their
  own, at instants that move through the day.
* Replies are drawn around the waiting question (:func:`replies`): its options, options it does
  not have, the person option, its labels typed in any case, numbers, and answers that fit or
  do not fit each kind of input. :func:`meaning` says what each must do, :func:`walk` where the
  script then goes; the tests compare the interpreter with both after every turn.
* Nothing reads a clock: instants are a fixed Wednesday plus drawn offsets.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni.domain import protocol as p
from omni.domain.bot import (
    MAX_ANSWER,
    PERSON,
    AskNode,
    BadReply,
    Bot,
    BotState,
    ConditionNode,
    EndNode,
    FieldRule,
    GroupOpenRule,
    HandoffNode,
    InputKind,
    MenuNode,
    MessageNode,
    Reply,
    Say,
    Step,
    TimeRule,
    answer,
    begin,
    check_answer,
)
from omni.domain.conversation import (
    Ack,
    BotAnswer,
    BotTimeout,
    CancelTimer,
    Context,
    Effect,
    Emit,
    EnterQueue,
    Event,
    Rejected,
    StartTimer,
    Status,
    Visitor,
    VisitorAttached,
    VisitorDetached,
    VisitorEnd,
    VisitorGone,
    VisitorMessage,
    handle,
    open_bot_conversation,
)
from omni.domain.model import Directory, Group, GroupLink, Service
from omni.domain.schedule import Interval, Schedule, Week

# --- drawing scripts ----------------------------------------------------------------------------

GROUPS = (1, 2, 3)
#: Fields the asks collect and the conditions test; ``email`` and ``phone`` also become the
#: visitor's own when they gave none.
FIELDS = ("topic", "email", "phone", "size")
#: Labels that collide on purpose: numbers that are also positions, one label in two cases,
#: the default person label, padding.
LABELS = ("2", "1", "0", "Yes", "yes", "Sales", "Talk to a person", " Padded ", "Ça va")
#: What visitors' forms hold and field rules look for.
VALUES = ("Sales", "yes", "42", "vera@example.com", "Lisbon", "+351 912 345 678")
ZONES = ("UTC", "America/Sao_Paulo", "Asia/Kolkata")
TERMINALS = ("handoff", "end")
KINDS = ("message", "menu", "ask", "condition", "handoff", "end")
#: Most successors a node of each kind gets here, and fewest (a condition has a rule and an
#: ``otherwise``). An ask's second successor is its ``otherwise``, which a text ask may not have.
MOST = {"message": 1, "menu": 4, "ask": 2, "condition": 4}
FEWEST = {"message": 1, "menu": 1, "ask": 1, "condition": 2}

#: Ids (a Key: letters, digits, ``_ . -``), short so that drawing is quick.
keys = st.text(alphabet="0aZ9_.-", min_size=1, max_size=5)
#: Mostly the colliding ones.
labels = st.one_of(*[st.sampled_from(LABELS)] * 3, st.text(min_size=1, max_size=12))
texts = st.text(max_size=20)
wall_times = st.builds(
    lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from((0, 1, 30, 59))
)
bounds = st.one_of(
    st.none(),
    st.integers(-100, 100),
    st.floats(-100, 100, allow_nan=False, allow_infinity=False),
)


def most(kind: str, input: str | None) -> int:
    return 1 if kind == "ask" and input == "text" else MOST[kind]


@st.composite
def scripts(draw: st.DrawFn) -> dict[str, Any]:
    """A valid script, as its JSON body."""
    size = draw(st.integers(1, 9), label="size")
    kinds: list[str] = []
    inputs: list[str | None] = []
    targets: list[list[int]] = []

    def has_room(j: int) -> bool:
        return kinds[j] not in TERMINALS and len(targets[j]) < most(kinds[j], inputs[j])

    for i in range(size):
        if i:
            parent = draw(st.sampled_from([j for j in range(i) if has_room(j)]))
            targets[parent].append(i)
        if i == size - 1:
            allowed: tuple[str, ...] = TERMINALS
        elif any(has_room(j) for j in range(i)):
            allowed = KINDS  # someone before can still be the next node's parent
        else:
            allowed = ("message", "menu", "ask", "condition")
        kinds.append(draw(st.sampled_from(allowed)))
        inputs.append(draw(st.sampled_from(InputKind)).value if kinds[i] == "ask" else None)
        targets.append([])
    questions = [j for j, kind in enumerate(kinds) if kind in ("menu", "ask")]
    for i, kind in enumerate(kinds):
        if kind in TERMINALS:
            continue
        if not targets[i]:
            targets[i].append(draw(st.integers(i + 1, size - 1)))  # its way forward
        count = draw(st.integers(max(len(targets[i]), FEWEST[kind]), most(kind, inputs[i])))
        if kind in ("menu", "ask"):
            extra = st.integers(0, size - 1)
        else:
            # Silent nodes go back only to a question: no loop without one.
            extra = st.sampled_from(sorted({*range(i + 1, size), *questions}))
        while len(targets[i]) < count:
            targets[i].append(draw(extra))
        targets[i] = list(draw(st.permutations(targets[i])))
    ids = draw(st.lists(keys, min_size=size, max_size=size, unique=True), label="ids")
    nodes = [
        node_body(draw, ids[i], kinds[i], inputs[i], [ids[t] for t in targets[i]])
        for i in range(size)
    ]
    body: dict[str, Any] = {
        "id": draw(keys),
        "name": "Bot",
        "start": ids[0],
        "nodes": list(draw(st.permutations(nodes))),
    }
    if draw(st.booleans()):
        body["timezone"] = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        body["person_label"] = draw(st.sampled_from(("Talk to a person", "A human, please")))
    return body


def node_body(
    draw: st.DrawFn, node_id: str, kind: str, input: str | None, to: list[str]
) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": kind, "id": node_id}
    if kind == "message":
        body |= {"text": draw(texts), "next": to[0]}
    elif kind == "menu":
        option_ids = draw(st.lists(keys, min_size=len(to), max_size=len(to), unique=True))
        body["text"] = draw(texts)
        body["options"] = [
            {"id": o, "label": draw(labels), "next": t} for o, t in zip(option_ids, to, strict=True)
        ]
        if draw(st.booleans()):
            body["retry"] = draw(texts)
    elif kind == "ask":
        body |= {"text": draw(texts), "field": draw(st.sampled_from(FIELDS)), "next": to[0]}
        body["input"] = input
        if len(to) == 2:
            body["otherwise"] = to[1]
        if draw(st.booleans()):
            body["attempts"] = draw(st.integers(1, 3))
        if draw(st.booleans()):
            body["retry"] = draw(texts)
        if input == "choice":
            body["choices"] = draw(st.lists(labels, min_size=2, max_size=4))
        elif input == "number":
            low, high = draw(bounds), draw(bounds)
            if low is not None and high is not None and low > high:
                low, high = high, low
            body |= {k: v for k, v in (("min", low), ("max", high)) if v is not None}
    elif kind == "condition":
        body["rules"] = [rule(draw, t) for t in to[:-1]]
        body["otherwise"] = to[-1]
    elif kind == "handoff":
        body["group"] = draw(st.sampled_from(GROUPS))
        if draw(st.booleans()):
            body["text"] = draw(texts)
    else:
        body["text"] = draw(texts)
    return body


def rule(draw: st.DrawFn, to: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(("field", "group_open", "time")))
    if kind == "field":
        values = draw(st.lists(st.sampled_from(VALUES) | labels, min_size=1, max_size=3))
        return {"kind": kind, "field": draw(st.sampled_from(FIELDS)), "values": values, "next": to}
    if kind == "group_open":
        return {"kind": kind, "group": draw(st.sampled_from(GROUPS)), "next": to}
    start = draw(wall_times)
    end = draw(wall_times.filter(lambda t: t != start))
    return {"kind": kind, "from": start, "to": end, "next": to}


def decode(body: dict[str, Any]) -> Bot:
    """The script as the admin API (JSON) and the configuration (Python values) decode it."""
    from_json = msgspec.json.decode(msgspec.json.encode(body), type=Bot)
    assert msgspec.convert(body, Bot) == from_json
    return from_json


@settings(max_examples=50, deadline=None)
@given(scripts())
def test_every_generated_script_decodes(body: dict[str, Any]) -> None:
    script = decode(body)
    assert script.start == body["start"]
    assert {n.id for n in script.nodes} == {n["id"] for n in body["nodes"]}


# --- broken scripts: the validator refuses each and names the node -------------------------------


def references(node: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where ``node`` names other nodes: (the dict, its key), to rewrite one."""
    if node["kind"] == "message":
        return [(node, "next")]
    if node["kind"] == "menu":
        return [(o, "next") for o in node["options"]]
    if node["kind"] == "ask":
        return [(node, k) for k in ("next", "otherwise") if k in node]
    if node["kind"] == "condition":
        return [*((r, "next") for r in node["rules"]), (node, "otherwise")]
    return []


def never_finishing(body: dict[str, Any]) -> set[str]:
    """The nodes from which no path reaches a hand-off or an end."""
    nodes = {n["id"]: n for n in body["nodes"]}
    leads = {i: {holder[key] for holder, key in references(n)} for i, n in nodes.items()}
    finishing = {i for i, n in nodes.items() if n["kind"] in TERMINALS}
    while True:
        more = {i for i in nodes if leads[i] & finishing} - finishing
        if not more:
            return set(nodes) - finishing
        finishing |= more


DEFECTS = (
    "dangling",
    "defined_twice",
    "unreachable",
    "no_way_out",
    "loop_without_question",
    "no_start",
    "one_choice",
    "option_twice",
    "min_above_max",
    "otherwise_on_text",
)


@st.composite
def broken(draw: st.DrawFn) -> tuple[dict[str, Any], str, set[str]]:
    """A valid script given one defect: (its body, the defect, the ids the error may name —
    ``start`` for a missing start)."""
    body = copy.deepcopy(draw(scripts()))
    defect = draw(st.sampled_from(DEFECTS), label="defect")
    nodes: list[dict[str, Any]] = body["nodes"]
    ids = {n["id"] for n in nodes}
    fresh = draw(
        st.lists(keys, min_size=3, max_size=3, unique=True).filter(lambda ks: not ids & set(ks))
    )
    place = draw(st.integers(0, len(nodes)), label="place")
    terminal = draw(st.sampled_from([n for n in nodes if n["kind"] in TERMINALS]))

    def replace(old: dict[str, Any], new: dict[str, Any]) -> None:
        nodes[nodes.index(old)] = new

    def existing_or_new(kind: str) -> dict[str, Any]:
        """A node of ``kind`` in the script, or else the finish turned into one (leading on to
        a new end)."""
        found = [n for n in nodes if n["kind"] == kind]
        if found:
            return draw(st.sampled_from(found))
        new: dict[str, Any] = {"kind": kind, "id": terminal["id"], "text": "?"}
        if kind == "menu":
            new["options"] = [{"id": "a", "label": "A", "next": fresh[2]}]
        else:
            new |= {"field": "f", "next": fresh[2]}
        replace(terminal, new)
        nodes.append({"kind": "end", "id": fresh[2], "text": "Bye"})
        return new

    if defect == "dangling":
        leading = [n for n in nodes if references(n)]
        if not leading:
            replace(
                terminal, {"kind": "message", "id": terminal["id"], "text": "", "next": fresh[0]}
            )
            return body, defect, {terminal["id"]}
        node = draw(st.sampled_from(leading))
        holder, key = draw(st.sampled_from(references(node)))
        holder[key] = fresh[0]
        return body, defect, {node["id"]}
    if defect == "defined_twice":
        twin = copy.deepcopy(draw(st.sampled_from(nodes)))
        nodes.insert(place, twin)
        return body, defect, {twin["id"]}
    if defect == "unreachable":
        lone = draw(
            st.sampled_from(
                [
                    {"kind": "end", "id": fresh[0], "text": "Bye"},
                    {"kind": "handoff", "id": fresh[0], "group": 1},
                    {"kind": "message", "id": fresh[0], "text": "", "next": body["start"]},
                    {
                        "kind": "menu",
                        "id": fresh[0],
                        "text": "?",
                        "options": [
                            {"id": f"o{k}", "label": "A", "next": n["id"]}
                            for k, n in enumerate(nodes)
                        ],
                    },
                ]
            )
        )
        nodes.insert(place, lone)
        return body, defect, {fresh[0]}
    if defect == "no_way_out":
        # A finish becomes a question that only ever leads back to itself.
        trap_id = terminal["id"]
        trap = draw(
            st.sampled_from(
                [
                    {
                        "kind": "menu",
                        "id": trap_id,
                        "text": "Again?",
                        "options": [{"id": "again", "label": "Again", "next": trap_id}],
                    },
                    {"kind": "ask", "id": trap_id, "text": "?", "field": "f", "next": trap_id},
                ]
            )
        )
        replace(terminal, trap)
        stuck = never_finishing(body)
        assert trap_id in stuck
        return body, defect, stuck
    if defect == "loop_without_question":
        # A finish becomes a condition whose rule goes round silent nodes back to it; its
        # otherwise is a way out, so the only fault is the loop.
        head = terminal["id"]
        length = draw(st.integers(1, 2))
        loop = fresh[:length]
        first = rule(draw, loop[0])
        replace(
            terminal, {"kind": "condition", "id": head, "rules": [first], "otherwise": fresh[2]}
        )
        for node_id, after in zip(loop, [*loop[1:], head], strict=True):
            silent = draw(st.sampled_from(("message", "condition")))
            if silent == "message":
                nodes.append({"kind": "message", "id": node_id, "text": "", "next": after})
            else:
                nodes.append(
                    {
                        "kind": "condition",
                        "id": node_id,
                        "rules": [rule(draw, after)],
                        "otherwise": after,
                    }
                )
        nodes.append({"kind": "end", "id": fresh[2], "text": "Bye"})
        return body, defect, {head, *loop}
    if defect == "no_start":
        body["start"] = fresh[0]
        return body, defect, {"start"}
    if defect == "option_twice":
        menu = existing_or_new("menu")
        menu["options"].insert(
            place % len(menu["options"]), dict(draw(st.sampled_from(menu["options"])))
        )
        return body, defect, {menu["id"]}
    ask = existing_or_new("ask")
    for key in ("min", "max", "choices"):
        ask.pop(key, None)
    if defect == "one_choice":
        ask |= {"input": "choice", "choices": draw(st.lists(labels, max_size=1))}
    elif defect == "min_above_max":
        low = draw(st.integers(-100, 100))
        ask |= {"input": "number", "min": low + draw(st.integers(1, 10)), "max": low}
    else:
        ask |= {"input": "text", "otherwise": draw(st.sampled_from(sorted(ids)))}
    return body, defect, {ask["id"]}


@settings(max_examples=150, deadline=None)
@given(broken())
def test_the_validator_refuses_a_broken_script_and_names_the_node(
    case: tuple[dict[str, Any], str, set[str]],
) -> None:
    body, defect, blamed = case
    for decoding in (
        lambda: msgspec.convert(body, Bot),
        lambda: msgspec.json.decode(msgspec.json.encode(body), type=Bot),
    ):
        with pytest.raises(msgspec.ValidationError) as refused:
            decoding()
        message = str(refused.value)
        assert message.startswith(f"bot {body['id']}: "), (defect, message)
        if blamed == {"start"}:
            assert f": start: there is no node {body['start']!r}" in message
        else:
            named = re.search(r"node '([^']*)'", message)
            assert named is not None and named.group(1) in blamed, (defect, blamed, message)


# --- the interpreter ------------------------------------------------------------------------------

#: When a closed group opens again, as the fake world says.
OPENS_AT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
CLOSED_MESSAGE = "That team is away."


@dataclass(frozen=True)
class FakeWorld:
    """A :class:`~omni.domain.bot.World` with everything given: the groups open now, whether
    another group of the service (one the script does not name) is, the local time, the form."""

    open_groups: frozenset[int] = frozenset(GROUPS)
    others_open: bool = False
    clock: time = time(12, 0)
    form: dict[str, str] = field(default_factory=dict)

    def group_open(self, group_id: int) -> bool:
        return group_id in self.open_groups

    def group_opens_at(self, group_id: int) -> datetime | None:
        return None if group_id in self.open_groups else OPENS_AT

    def anyone_open(self) -> bool:
        return bool(self.open_groups) or self.others_open

    def local_time(self, zone: str) -> time:
        return self.clock

    def visitor_field(self, name: str) -> str | None:
        return self.form.get(name)

    @property
    def group_closed_message(self) -> str:
        return CLOSED_MESSAGE


worlds = st.builds(
    FakeWorld,
    open_groups=st.frozensets(st.sampled_from(GROUPS)),
    others_open=st.booleans(),
    clock=st.times(),
    form=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(VALUES)),
)

#: Typed answers around each kind of input: some fit, some do not, some are at the edges
#: (the longest e-mail address and phone number the visitor's own may hold, comma decimals,
#: not-a-number and infinities, which Python reads as floats).
ANSWERS: dict[InputKind, tuple[str, ...]] = {
    InputKind.EMAIL: (
        "vera@example.com",
        "a@b.co",
        "vera at example",
        "a@b",
        "@b.com",
        "x@y.z.",
        "v@" + "x" * 314 + ".com",  # 320 characters
        "v@" + "x" * 315 + ".com",
    ),
    InputKind.PHONE: (
        "+55 (11) 99999-9999",
        "123-4567",
        "12345",
        "+1 800 FLOWERS",
        "1234567890123456",
        "1" + " " * 57 + "234567",  # 64 characters
        "1" + " " * 58 + "234567",
    ),
    InputKind.NUMBER: ("42", "4,5", "-3", "1e3", "nan", "inf", "-Infinity", "0", "1,000.5"),
    InputKind.TEXT: (
        "x" * 65,  # longer than a phone number may be
        "x" * 321,  # longer than an e-mail address may be
        "x" * MAX_ANSWER,
        "x" * (MAX_ANSWER + 1),
        "   ",
        "",
    ),
}


def replies(script: Bot, node: MenuNode | AskNode, person: bool) -> st.SearchStrategy[Reply]:
    """What a visitor may send at ``node``: sensible or not, mostly what it asks for (its
    options, or typed answers around its kind of input)."""
    if isinstance(node, MenuNode):
        ids = [o.id for o in node.options]
        names = [o.label for o in node.options]
    else:
        ids = [str(i) for i in range(1, len(node.choices) + 1)]
        names = list(node.choices)
    others = sorted(
        {o.id for n in script.nodes if isinstance(n, MenuNode) for o in n.options} - set(ids)
    )
    kind = node.input if isinstance(node, AskNode) else InputKind.CHOICE
    anything = [a for answers in ANSWERS.values() for a in answers]
    typed = [
        st.sampled_from(ANSWERS.get(kind) or [*names, *map(str, range(len(ids) + 2))]),
        st.sampled_from([*names, script.person_label, *VALUES]).flatmap(
            lambda s: st.sampled_from([s, s.upper(), s.lower(), f" {s.strip()}  "])
        ),
        st.sampled_from(anything),
        st.text(max_size=12),
    ]
    if kind is InputKind.NUMBER:
        edges = [b for b in (node.min, node.max) if b is not None]  # type: ignore[union-attr]
        near = st.sampled_from(edges or [0.0]).flatmap(
            lambda b: st.sampled_from([b, b - 0.5, b + 0.5, b - 1, b + 1])
        )
        typed.append(near.flatmap(lambda x: st.sampled_from([repr(x), repr(x).replace(".", ",")])))
    options = [st.sampled_from(["nope", "0", str(len(ids) + 1), PERSON, *others])]
    if ids:
        options += [st.sampled_from(ids)] * 3
    picked = st.one_of(*options).map(lambda o: Reply(option=o))
    written = st.one_of(typed[0], *typed).map(lambda t: Reply(text=t))
    odd = st.sampled_from((Reply(option=PERSON), Reply()))
    if kind is not InputKind.CHOICE:
        return st.one_of(written, written, written, picked, odd)  # mostly typed, as asked
    return st.one_of(picked, written, written, odd)


Meant = Literal["bad", "person", "retry", "go"]


def meaning(
    script: Bot, node: MenuNode | AskNode, reply: Reply, person: bool
) -> tuple[Meant, str | None, str | None]:
    """What ``reply`` at ``node`` must do: refused, a person, the node's retry, or on to a node
    (then also what an ask keeps). A label is matched before a position, so a choice "1" is
    never taken for the first choice."""
    if isinstance(node, MenuNode):
        pairs = [(o.id, o.label, o.next) for o in node.options]
    elif node.input is InputKind.CHOICE:
        pairs = [(str(i), c, node.next) for i, c in enumerate(node.choices, 1)]
    else:
        pairs = []
    if reply.option is not None:
        if reply.option == PERSON:
            return ("person", None, None) if person else ("bad", None, None)
        picked = next((pair for pair in pairs if pair[0] == reply.option), None)
        return ("bad", None, None) if picked is None else ("go", picked[2], picked[1])
    text = (reply.text or "").strip()
    if not text or len(text) > MAX_ANSWER:
        return "bad", None, None
    if person and text.casefold() == script.person_label.strip().casefold():
        return "person", None, None
    if pairs:
        by_label = [pair for pair in pairs if pair[1].strip().casefold() == text.casefold()]
        by_place = [pair for i, pair in enumerate(pairs, 1) if text == str(i)]
        picked = next(iter(by_label + by_place), None)
        return ("retry", None, None) if picked is None else ("go", picked[2], picked[1])
    assert isinstance(node, AskNode)
    kept = check_answer(node, text)
    return ("retry", None, None) if kept is None else ("go", node.next, kept)


def holds(
    rule: FieldRule | GroupOpenRule | TimeRule, fields: dict[str, str], world: FakeWorld, zone: str
) -> bool:
    if isinstance(rule, FieldRule):
        value = fields[rule.field] if rule.field in fields else world.visitor_field(rule.field)
        return value is not None and value.strip().casefold() in {
            v.strip().casefold() for v in rule.values
        }
    if isinstance(rule, GroupOpenRule):
        return world.group_open(rule.group)
    start, end = (time.fromisoformat(f"{t:0>5}") for t in (rule.start, rule.end))
    now = world.local_time(zone)
    return start <= now < end if start < end else (now >= start or now < end)


def walk(
    script: Bot, node_id: str, fields: dict[str, str], world: FakeWorld, back: str | None
) -> tuple[list[str], str, str]:
    """Where the script goes from ``node_id``: the nodes that speak, how the turn ends (``wait``
    or a finish) and at which node (``back``: the last question, where a closed group sends
    the visitor)."""
    spoken: list[str] = []
    seen: set[str] = set()
    while True:
        assert node_id not in seen, f"the run goes round {node_id!r}"
        seen.add(node_id)
        node = script.node(node_id)
        if isinstance(node, MessageNode):
            spoken.append(node.id)
            node_id = node.next
        elif isinstance(node, ConditionNode):
            node_id = next(
                (r.next for r in node.rules if holds(r, fields, world, script.timezone)),
                node.otherwise,
            )
        elif isinstance(node, MenuNode | AskNode):
            return [*spoken, node.id], "wait", node.id
        elif isinstance(node, EndNode):
            return spoken + [node.id] * bool(node.text), "ended", node.id
        elif world.group_open(node.group):
            return spoken + [node.id] * bool(node.text), "handoff", node.id
        elif not world.anyone_open():
            return spoken, "out_of_hours", node.id
        elif back is None:
            return [*spoken, node.id], "out_of_hours", node.id
        else:
            return [*spoken, node.id, back], "wait", back


def offered(script: Bot, node: MenuNode | AskNode, person: bool) -> tuple[tuple[str, str], ...]:
    """The options a question's ``bot`` frame carries."""
    if isinstance(node, MenuNode):
        pairs = [(o.id, o.label) for o in node.options]
    else:
        pairs = [(str(i), c) for i, c in enumerate(node.choices, 1)]
    return (*pairs, *([(PERSON, script.person_label)] if person else []))


def check_says(script: Bot, says: list[Say], world: FakeWorld, person: bool) -> None:
    """Each ``Say`` is what its node says: its text, and a question's options and input."""
    for say in says:
        node = script.node(say.node)
        if isinstance(node, MenuNode | AskNode):
            assert say.text in (node.text, node.retry)
            assert say.options == offered(script, node, person)
            assert say.input == (node.input if isinstance(node, AskNode) else None)
            assert say is says[-1], "a question is the last thing a turn says"
            continue
        assert (say.options, say.input) == ((), None)
        if isinstance(node, HandoffNode) and not world.group_open(node.group):
            assert (say.text, say.opens_at) == (CLOSED_MESSAGE, OPENS_AT)
        else:
            assert isinstance(node, MessageNode | EndNode | HandoffNode)
            assert (say.text, say.opens_at) == (node.text, None)


def check_turn(
    script: Bot,
    state: BotState,
    step: Step,
    world: FakeWorld,
    person: bool,
    expected: tuple[list[str], str, str],
) -> None:
    spoken, how, where = expected
    assert [s.node for s in step.says] == spoken
    assert step.next == how
    check_says(script, step.says, world, person)
    assert state.node == where
    if how == "wait":
        question = script.node(where)
        assert isinstance(question, MenuNode | AskNode)
        assert (state.script, state.outcome, state.last_question) == (script, None, where)
        if isinstance(question, AskNode) and question.otherwise is not None:
            assert state.attempts < question.attempts
        return
    assert state.script is None and state.outcome == how
    last = script.node(where)
    if how == "handoff":
        assert isinstance(last, HandoffNode)
        assert step.group == state.group == last.group and world.group_open(last.group)
    else:
        assert step.group is None


@settings(max_examples=150, deadline=None)
@given(body=scripts(), person=st.booleans(), data=st.data())
def test_the_interpreter_waits_at_a_question_or_finishes_whatever_the_visitor_sends(
    body: dict[str, Any], person: bool, data: st.DataObject
) -> None:
    script = decode(body)
    state = BotState(script=script)
    world = data.draw(worlds, label="world")
    step = begin(state, world, person=person)
    check_turn(script, state, step, world, person, walk(script, script.start, {}, world, None))
    for turn in range(1, 16):
        if step.next != "wait":
            break
        assert state.node is not None
        node = script.node(state.node)
        assert isinstance(node, MenuNode | AskNode)
        reply = data.draw(replies(script, node, person), label=f"reply {turn}")
        if data.draw(st.booleans(), label=f"the world changes {turn}"):
            world = data.draw(worlds, label=f"world {turn}")
        before = state.copy()
        meant, target, value = meaning(script, node, reply, person)
        if meant == "bad":
            with pytest.raises(BadReply):
                answer(state, reply, world, person=person)
            assert state == before
            continue
        shown, step = answer(state, reply, world, person=person)
        fields = dict(before.fields)
        if meant == "person":
            assert (step.says, step.next, step.group) == ([], "person", None)
            assert (state.script, state.outcome, state.node) == (None, "person", node.id)
        elif meant == "retry":
            otherwise = node.otherwise if isinstance(node, AskNode) else None
            if otherwise is not None and before.attempts + 1 >= node.attempts:  # type: ignore[union-attr]
                # Enough bad answers: on to otherwise (which counts afresh at its question).
                expected = walk(script, otherwise, fields, world, node.id)
                check_turn(script, state, step, world, person, expected)
                continue
            assert state.attempts == before.attempts + 1
            kind = node.input if isinstance(node, AskNode) else None
            assert step == Step([Say(node.retry, node.id, offered(script, node, person), kind)])
            assert state.node == node.id and state.fields == before.fields
        else:
            assert target is not None
            if isinstance(node, AskNode):
                assert value is not None
                fields[node.field] = value
                assert state.fields == fields
                if node.input in (InputKind.EMAIL, InputKind.PHONE):
                    # It may become the visitor's own e-mail or phone (F15): it must fit there.
                    msgspec.convert({"name": "Vera", node.input.value: value}, Visitor)
            assert shown == (value if reply.option is not None else reply.text.strip())  # type: ignore[union-attr]
            check_turn(
                script, state, step, world, person, walk(script, target, fields, world, node.id)
            )
    if step.next != "wait":
        # A finish is final: the state keeps no script to go on with.
        assert state.script is None and state.outcome == step.next


# --- inside the conversation machine ------------------------------------------------------------

T0 = datetime(2026, 11, 25, tzinfo=UTC)  # a Wednesday, midnight UTC
MORNINGS = Schedule(
    "mornings", "UTC", Week.of({day: (Interval("08:00", "12:00"),) for day in range(7)})
)
EVENINGS = Schedule(
    "evenings", "UTC", Week.of({day: (Interval("18:00", "22:00"),) for day in range(7)})
)
SCHEDULES = {s.id: s for s in (Schedule.always_open(), MORNINGS, EVENINGS)}
#: Where a conversation may be after any events while it meets the bot.
BOT_STATUSES = {Status.BOT, Status.QUEUED, Status.OUT_OF_HOURS, Status.CLOSED, Status.ABANDONED}


@st.composite
def contexts(draw: st.DrawFn, script: Bot) -> Context:
    """A service running ``script``, linked to every group in some order, each link open always,
    mornings or evenings; the service itself always or mornings. (Hours that never open would
    make every out-of-hours notice look 400 days ahead for its ``opens_at``: slow.)"""
    order = draw(st.permutations(GROUPS))
    hours = st.sampled_from((None, "always", "mornings", "evenings"))
    service = Service(
        id=1,
        name="Shop",
        links=tuple(GroupLink(group=g, schedule=draw(hours)) for g in order),
        schedule=draw(st.sampled_from((None, "mornings"))),
        bot=script.id,
        bot_person=draw(st.booleans()),
        group_closed_message=CLOSED_MESSAGE,
    )
    directory = Directory(
        services={1: service},
        groups={g: Group(g, f"G{g}") for g in GROUPS},
        operators={},
        schedules=SCHEDULES,
        bots={script.id: script},
    )
    return Context(service, operator_grace=60.0, directory=directory)


visitors = st.builds(
    Visitor,
    name=st.just("Vera"),
    email=st.sampled_from((None, None, "vera@example.com", "not an e-mail")),
    phone=st.sampled_from((None, None, "+351 912 345 678")),
    fields=st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(VALUES)),
)


class Run:
    """A bot conversation driven through :func:`handle`, checked after every event."""

    def __init__(self, script: Bot, ctx: Context, visitor: Visitor, now: datetime) -> None:
        self.script, self.ctx, self.now = script, ctx, now
        self.conv, effects = open_bot_conversation(
            conversation_id="c1",
            ticket="T-1",
            token_hash="hash",
            visitor=visitor,
            bot=script,
            now=now,
            ctx=ctx,
        )
        self.seqs: list[int] = []
        self.timers: set[str] = set()
        self.client_ids: dict[str, int] = {}
        self.took(effects, previous=None)

    @property
    def person(self) -> bool:
        return self.ctx.service.bot_person

    def waiting_at(self) -> MenuNode | AskNode:
        state = self.conv.bot
        assert state is not None and state.node is not None
        node = self.script.node(state.node)
        assert isinstance(node, MenuNode | AskNode)
        return node

    def step(self, event: Event, later: float) -> None:
        self.now += timedelta(seconds=later)
        before = copy.deepcopy(self.conv, {id(self.script): self.script})  # immutable
        previous = self.conv.status
        resend = isinstance(event, BotAnswer | VisitorMessage) and (
            event.client_id in self.client_ids
        )
        try:
            conv, effects = handle(self.conv, event, self.now, self.ctx)
        except Rejected as rejected:
            assert self.conv == before, "a refused event changed the conversation"
            if previous is Status.BOT:
                # Only an answer the bot cannot take at all is refused while it talks.
                assert rejected.code == "invalid_reply", rejected
                assert isinstance(event, BotAnswer | VisitorMessage)
                reply = (
                    Reply(event.option, event.text)
                    if isinstance(event, BotAnswer)
                    else Reply(text=event.text)
                )
                meant = meaning(self.script, self.waiting_at(), reply, self.person)[0]
                assert meant == "bad", (reply, rejected)
            else:
                assert rejected.code == "invalid_state", rejected
            return
        assert conv is self.conv
        if resend:
            assert isinstance(event, BotAnswer | VisitorMessage)
            assert effects == [Ack("visitor", event.client_id, self.client_ids[event.client_id])]
            return
        if previous is not Status.BOT:
            # The bot is done: what is left of it is ignored or refused, never run again.
            assert isinstance(event, BotTimeout), event
            assert effects == [] and self.conv == before
            return
        if isinstance(event, BotAnswer | VisitorMessage):
            answered = [e for e in effects if isinstance(e, Emit) and e.kind == "bot_reply"]
            assert len(answered) == 1 and effects[1] == Ack(
                "visitor", event.client_id, answered[0].seq
            )
            self.client_ids[event.client_id] = answered[0].seq
        self.took(effects, previous)

    def took(self, effects: list[Effect], previous: Status | None) -> None:
        conv, state = self.conv, self.conv.bot
        assert state is not None
        for effect in effects:
            if isinstance(effect, StartTimer):
                self.timers.add(effect.name)
            elif isinstance(effect, CancelTimer):
                self.timers.discard(effect.name)
        emitted = [e for e in effects if isinstance(e, Emit)]
        self.seqs += [e.seq for e in emitted]
        assert self.seqs == list(range(1, conv.last_seq + 1)), self.seqs
        for emit in emitted:
            if isinstance(emit.frame, p.BotSays):
                node = self.script.node(emit.frame.node)
                options = tuple((o.id, o.label) for o in emit.frame.options)
                if isinstance(node, MenuNode | AskNode):
                    assert options == offered(self.script, node, self.person)
                    kind = node.input.value if isinstance(node, AskNode) else None
                    assert emit.frame.input == kind
                else:
                    assert (options, emit.frame.input) == ((), None)
        assert conv.status in BOT_STATUSES
        assert ("bot" in self.timers) == (conv.status is Status.BOT)
        # What the bot collected joined the visitor, who still decodes (as the store loads it).
        assert msgspec.convert(msgspec.to_builtins(conv.visitor), Visitor) == conv.visitor
        for name, value in state.fields.items():
            assert conv.visitor.fields[name] == value
        kinds = [e.kind for e in emitted]
        if conv.status is Status.BOT:
            assert state.script is self.script and state.outcome is None
            self.waiting_at()
            assert not kinds or kinds[-1] == "bot"  # the question, asked (again) last
        elif conv.status is Status.QUEUED:
            assert state.script is None and state.outcome in ("handoff", "person")
            assert conv.group_id is not None and conv.group_id == state.group
            assert self.ctx.directory is not None
            assert self.ctx.directory.group_open(self.ctx.service, conv.group_id, self.now)
            assert EnterQueue(conv.group_id) in effects
        elif conv.status is Status.OUT_OF_HOURS:
            assert state.script is None and state.outcome == "out_of_hours"
            assert kinds[-1] == "out_of_hours"
        elif conv.status is Status.CLOSED:
            assert state.outcome == "ended" and conv.ended_by == "bot"
            assert kinds[-2:] == ["ended", "closed"]
        else:
            assert state.outcome == "dropped" and previous is Status.BOT
            assert conv.ended_by in ("bot_timeout", "visitor", "visitor_gone")
            assert kinds[-2:] == ["ended", "closed"]


@st.composite
def events(draw: st.DrawFn, run: Run, turn: int) -> Event:
    """What may happen next to a conversation with the bot: mostly answers."""
    client_id = f"r{turn}"
    if run.conv.status is not Status.BOT:
        # After the bot: its timer fired late, an answer to a question no longer asked, or a
        # resend of one it took.
        resends = [BotAnswer(c, text="again") for c in sorted(run.client_ids)]
        return draw(st.sampled_from([BotTimeout(), BotAnswer(client_id, option=PERSON), *resends]))
    what = draw(st.sampled_from(["answer"] * 6 + ["message"] * 2 + ["resend", "leave"]))
    if what == "resend" and run.client_ids:
        return BotAnswer(draw(st.sampled_from(sorted(run.client_ids))), option="nope")
    if what == "leave":
        return draw(
            st.sampled_from(
                [BotTimeout(), VisitorEnd(), VisitorGone(), VisitorDetached(), VisitorAttached()]
            )
        )
    reply = draw(replies(run.script, run.waiting_at(), run.person))
    if what == "message" and reply.option is None:
        return VisitorMessage(client_id, reply.text or "")
    return BotAnswer(client_id, option=reply.option, text=reply.text)


@settings(max_examples=100, deadline=None)
@given(body=scripts(), data=st.data())
def test_a_bot_conversation_waits_queues_closes_or_goes_out_of_hours_with_every_seq_in_order(
    body: dict[str, Any], data: st.DataObject
) -> None:
    script = decode(body)
    ctx = data.draw(contexts(script), label="context")
    start = T0 + timedelta(minutes=data.draw(st.integers(0, 24 * 60 - 1), label="minute"))
    run = Run(script, ctx, data.draw(visitors, label="visitor"), start)
    for turn in range(1, 16):
        event = data.draw(events(run, turn), label=f"event {turn}")
        run.step(event, data.draw(st.sampled_from((0.0, 60.0, 3600.0)), label=f"later {turn}"))
        if run.conv.status is not Status.BOT and turn > 1 and data.draw(st.booleans()):
            break


# --- unit tests: answers, menus, retries, conditions, closed groups ------------------------------


def bot(*nodes: dict[str, Any], **settings: Any) -> Bot:
    """A script of ``nodes`` starting at the first."""
    return msgspec.convert(
        {"id": "b", "name": "B", "start": nodes[0]["id"], "nodes": list(nodes), **settings}, Bot
    )


def ask(input: str, **more: Any) -> AskNode:
    return AskNode(id="q", text="?", field="f", next="n", input=InputKind(input), **more)


END = {"kind": "end", "id": "bye", "text": "Bye"}


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("vera@example.com", True),
        ("vera.lima+shop@mail.example.co", True),
        ("v@" + "x" * 314 + ".com", True),  # 320 characters: the longest the visitor's holds
        ("v@" + "x" * 315 + ".com", False),
        ("vera at example", False),
        ("vera@example", False),
        ("vera@example.", False),
        ("@example.com", False),
        ("vera@@example.com", False),
        ("vera @example.com", False),
    ],
)
def test_an_email_answer(text: str, fits: bool) -> None:
    assert check_answer(ask("email"), text) == (text if fits else None)


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("+55 (11) 99999-9999", True),
        ("123-4567", True),  # seven digits
        ("123456789012345", True),  # fifteen
        ("1" + " " * 57 + "234567", True),  # 64 characters: the longest the visitor's holds
        ("1" + " " * 58 + "234567", False),
        ("123456", False),
        ("1234567890123456", False),
        ("+1 800 FLOWERS", False),
        ("12-34-56-78 ext 9", False),
    ],
)
def test_a_phone_answer(text: str, fits: bool) -> None:
    assert check_answer(ask("phone"), text) == (text if fits else None)


@pytest.mark.parametrize(
    ("text", "fits"),
    [
        ("1", True),  # the bounds are included
        ("10", True),
        ("5,5", True),  # a comma decimal
        ("2.25", True),
        ("1e1", False),  # people type numbers, not Python's notations
        ("0.99", False),
        ("10,01", False),
        ("-3", False),
        ("nan", False),
        ("NaN", False),
        ("inf", False),
        ("-Infinity", False),
        ("1e999", False),  # infinite once read
        ("ten", False),
        ("1,000.5", False),
    ],
)
def test_a_number_answer_within_bounds(text: str, fits: bool) -> None:
    assert check_answer(ask("number", min=1, max=10), text) == (text if fits else None)


def test_a_number_without_bounds_takes_any_finite_number_and_nothing_else() -> None:
    node = ask("number")
    assert [check_answer(node, t) for t in ("-3", "123456789", "0,5")] == ["-3", "123456789", "0,5"]
    assert [check_answer(node, t) for t in ("nan", "-inf", "1e400", "")] == [None] * 4


def test_a_choice_answer_is_a_label_in_any_case_or_its_number_and_keeps_the_label() -> None:
    node = ask("choice", choices=("Yes", "No", " Not sure "))
    assert check_answer(node, "yes") == "Yes"
    assert check_answer(node, "NO") == "No"
    assert check_answer(node, "not sure") == " Not sure "  # the padding is no part of it
    assert check_answer(node, "2") == "No"
    assert check_answer(node, "4") is None
    assert check_answer(node, "maybe") is None


def test_a_choice_labelled_with_numbers_is_matched_by_label_first() -> None:
    """Of choices "0", "1", "2", a visitor who types "1" means the choice "1" — not the first
    choice (which is "0"). Hypothesis found this (labels matched together with positions)."""
    node = ask("choice", choices=("0", "1", "2", "3 or more"))
    assert [check_answer(node, t) for t in ("0", "1", "2", "4")] == ["0", "1", "2", "3 or more"]


def test_a_text_answer_is_kept_as_typed() -> None:
    assert check_answer(ask("text"), "anything at all") == "anything at all"


MENU = {
    "kind": "menu",
    "id": "menu",
    "text": "What do you need?",
    "options": [
        {"id": "buy", "label": "Buy something", "next": "bye"},
        {"id": "bill", "label": "Billing", "next": "billing"},
    ],
    "retry": "Pick one, please.",
}


def test_a_menu_takes_an_option_its_label_in_any_case_or_its_number() -> None:
    script = bot(MENU, END, {"kind": "handoff", "id": "billing", "group": 1})
    world = FakeWorld()
    for reply, outcome in [
        (Reply(option="bill"), "handoff"),
        (Reply(text="  billing "), "handoff"),
        (Reply(text="BUY SOMETHING"), "ended"),
        (Reply(text="1"), "ended"),
        (Reply(text="2"), "handoff"),
    ]:
        state = BotState(script=script)
        begin(state, world, person=True)
        shown, step = answer(state, reply, world, person=True)
        assert step.next == outcome, reply
    state = BotState(script=script)
    begin(state, world, person=False)
    shown, step = answer(state, Reply(text="3"), world, person=False)
    assert (shown, step.next, state.attempts) == ("3", "wait", 1)
    assert step.says == [
        Say("Pick one, please.", "menu", (("buy", "Buy something"), ("bill", "Billing")))
    ]
    before = state.copy()
    for refused in (Reply(option="nope"), Reply(option=PERSON), Reply(text="  "), Reply()):
        with pytest.raises(BadReply):
            answer(state, refused, world, person=False)
        assert state == before


def test_a_menu_labelled_with_numbers_is_matched_by_label_first() -> None:
    script = bot(
        {
            "kind": "menu",
            "id": "menu",
            "text": "How many?",
            "options": [
                {"id": "two", "label": "2", "next": "bye"},
                {"id": "one", "label": "1", "next": "billing"},
            ],
        },
        END,
        {"kind": "handoff", "id": "billing", "group": 1},
    )
    state = BotState(script=script)
    begin(state, FakeWorld(), person=False)
    assert answer(state, Reply(text="1"), FakeWorld(), person=False)[1].next == "handoff"


def test_the_person_label_hands_the_visitor_to_a_person_when_the_service_allows_it() -> None:
    script = bot(MENU, END, {"kind": "handoff", "id": "billing", "group": 1})
    state = BotState(script=script)
    begin(state, FakeWorld(), person=True)
    _, step = answer(state, Reply(text="talk to a PERSON"), FakeWorld(), person=True)
    assert (step.next, state.outcome, state.node) == ("person", "person", "menu")
    state = BotState(script=script)
    begin(state, FakeWorld(), person=False)
    assert (
        answer(state, Reply(text="Talk to a person"), FakeWorld(), person=False)[1].next == "wait"
    )


def test_after_attempts_bad_answers_an_ask_goes_to_otherwise() -> None:
    script = bot(
        {
            "kind": "ask",
            "id": "email",
            "text": "Your e-mail?",
            "field": "email",
            "input": "email",
            "retry": "That is no e-mail address.",
            "attempts": 2,
            "otherwise": "human",
            "next": "bye",
        },
        END,
        {"kind": "handoff", "id": "human", "group": 2, "text": "A colleague will help."},
    )
    state = BotState(script=script)
    begin(state, FakeWorld(), person=False)
    _, step = answer(state, Reply(text="vera at example"), FakeWorld(), person=False)
    assert step.says == [Say("That is no e-mail address.", "email", (), InputKind.EMAIL)]
    assert (step.next, state.attempts) == ("wait", 1)
    _, step = answer(state, Reply(text="still not"), FakeWorld(), person=False)
    assert step == Step([Say("A colleague will help.", "human")], "handoff", 2)
    assert "email" not in state.fields


def test_without_otherwise_an_ask_keeps_asking() -> None:
    script = bot(
        {"kind": "ask", "id": "n", "text": "?", "field": "n", "input": "number", "next": "bye"},
        END,
    )
    state = BotState(script=script)
    begin(state, FakeWorld(), person=False)
    for attempt in range(1, 6):
        assert answer(state, Reply(text="many"), FakeWorld(), person=False)[1].next == "wait"
        assert state.attempts == attempt
    assert answer(state, Reply(text="4,5"), FakeWorld(), person=False)[1].next == "ended"
    assert state.fields == {"n": "4,5"}


def test_a_text_ask_with_otherwise_is_refused() -> None:
    """Any text fits, so ``otherwise`` could never be taken: the script would promise a way out
    that no visitor can use (and the validator would count it as one)."""
    body = {
        "kind": "ask",
        "id": "q",
        "text": "?",
        "field": "f",
        "next": "bye",
        "otherwise": "bye",
    }
    with pytest.raises(msgspec.ValidationError, match=r"node 'q': a text answer always fits"):
        bot(body, END)
    bot({**body, "input": "email"}, END)


NIGHT = {
    "kind": "condition",
    "id": "when",
    "rules": [{"kind": "time", "from": "22:00", "to": "06:00", "next": "night"}],
    "otherwise": "day",
}
NIGHT_NODES = (
    NIGHT,
    {"kind": "end", "id": "night", "text": "Good night"},
    {"kind": "end", "id": "day", "text": "Good day"},
)


@pytest.mark.parametrize(
    ("clock", "said"),
    [
        (time(22, 0), "night"),
        (time(23, 59), "night"),
        (time(0, 0), "night"),
        (time(5, 59), "night"),
        (time(6, 0), "day"),
        (time(12, 0), "day"),
        (time(21, 59), "day"),
    ],
)
def test_a_time_rule_from_after_to_spans_midnight(clock: time, said: str) -> None:
    step = begin(BotState(script=bot(*NIGHT_NODES)), FakeWorld(clock=clock), person=False)
    assert [s.node for s in step.says] == [said]


def test_a_time_rule_reads_the_clock_in_the_bots_time_zone() -> None:
    """Through the conversation machine: 17:00 UTC is 22:30 in Kolkata (UTC+5:30)."""
    script = bot(*NIGHT_NODES, timezone="Asia/Kolkata")
    ctx = plain_context(script)
    for hour, said in ((17, "night"), (16, "day")):
        conv, effects = open_bot_conversation(
            conversation_id="c1",
            ticket="T-1",
            token_hash="h",
            visitor=Visitor("Vera"),
            bot=script,
            now=T0 + timedelta(hours=hour),
            ctx=ctx,
        )
        frames = [e.frame for e in effects if isinstance(e, Emit)]
        assert isinstance(frames[0], p.BotSays) and frames[0].node == said
        assert conv.status is Status.CLOSED


def plain_context(script: Bot, links: tuple[GroupLink, ...] | None = None) -> Context:
    service = Service(
        id=1,
        name="Shop",
        links=links or tuple(GroupLink(group=g) for g in GROUPS),
        bot=script.id,
        group_closed_message=CLOSED_MESSAGE,
    )
    directory = Directory(
        services={1: service},
        groups={g: Group(g, f"G{g}") for g in GROUPS},
        operators={},
        schedules=SCHEDULES,
        bots={script.id: script},
    )
    return Context(service, operator_grace=60.0, directory=directory)


TOPIC = {
    "kind": "condition",
    "id": "route",
    "rules": [{"kind": "field", "field": "topic", "values": ["Sales", "buy"], "next": "sales"}],
    "otherwise": "other",
}
TOPIC_NODES = (
    TOPIC,
    {"kind": "end", "id": "sales", "text": "Sales"},
    {"kind": "end", "id": "other", "text": "Other"},
)


def test_a_field_rule_reads_the_visitors_form_when_the_bot_did_not_ask() -> None:
    script = bot(*TOPIC_NODES)
    for form, said in [
        ({"topic": "  sales "}, "sales"),  # any case, padding aside
        ({"topic": "BUY"}, "sales"),
        ({"topic": "support"}, "other"),
        ({}, "other"),
    ]:
        step = begin(BotState(script=script), FakeWorld(form=form), person=False)
        assert [s.node for s in step.says] == [said], form


def test_a_field_the_bot_collected_comes_before_the_form() -> None:
    script = bot(
        {"kind": "ask", "id": "q", "text": "Topic?", "field": "topic", "next": "route"},
        *TOPIC_NODES,
    )
    state = BotState(script=script)
    world = FakeWorld(form={"topic": "Sales"})
    begin(state, world, person=False)
    _, step = answer(state, Reply(text="support"), world, person=False)
    assert [s.node for s in step.says] == ["other"]


def test_a_field_rule_on_the_email_reads_the_visitors_own_in_a_conversation() -> None:
    """The conversation's World gives the ``email`` and ``phone`` the visitor typed in the form
    (and their other fields) to a field rule."""
    script = bot(
        {
            "kind": "condition",
            "id": "route",
            "rules": [
                {"kind": "field", "field": "email", "values": ["vip@example.com"], "next": "vip"},
                {"kind": "field", "field": "city", "values": ["Lisbon"], "next": "local"},
            ],
            "otherwise": "other",
        },
        {"kind": "end", "id": "vip", "text": "VIP"},
        {"kind": "end", "id": "local", "text": "Local"},
        {"kind": "end", "id": "other", "text": "Other"},
    )
    ctx = plain_context(script)
    for visitor, said in [
        (Visitor("Vera", email="VIP@example.com"), "vip"),
        (Visitor("Vera", fields={"city": "lisbon"}), "local"),
        (Visitor("Vera", email="vera@example.com"), "other"),
    ]:
        _, effects = open_bot_conversation(
            conversation_id="c1",
            ticket="T-1",
            token_hash="h",
            visitor=visitor,
            bot=script,
            now=T0,
            ctx=ctx,
        )
        frames = [e.frame for e in effects if isinstance(e, Emit)]
        assert isinstance(frames[0], p.BotSays) and frames[0].node == said


HANDOFF_TO_1 = {"kind": "handoff", "id": "sales", "group": 1, "text": "Passing you to Sales."}


def test_a_hand_off_to_a_closed_group_goes_back_to_the_last_question() -> None:
    menu = {
        "kind": "menu",
        "id": "menu",
        "text": "What do you need?",
        "options": [
            {"id": "buy", "label": "Buy", "next": "hello"},
            {"id": "bye", "label": "Nothing", "next": "bye"},
        ],
    }
    hello = {"kind": "message", "id": "hello", "text": "Let me see.", "next": "sales"}
    script = bot(menu, hello, HANDOFF_TO_1, END)
    state = BotState(script=script)
    closed = FakeWorld(open_groups=frozenset({2}))
    begin(state, closed, person=True)
    _, step = answer(state, Reply(option="buy"), closed, person=True)
    asked = Say(
        "What do you need?",
        "menu",
        (("buy", "Buy"), ("bye", "Nothing"), (PERSON, "Talk to a person")),
    )
    assert step == Step(
        [Say("Let me see.", "hello"), Say(CLOSED_MESSAGE, "sales", opens_at=OPENS_AT), asked]
    )
    assert (state.node, state.attempts, state.script) == ("menu", 0, script)
    # Once the group opens, the same choice hands the visitor over.
    _, step = answer(state, Reply(option="buy"), FakeWorld(), person=True)
    assert (step.next, step.group, state.outcome) == ("handoff", 1, "handoff")


def test_a_closed_group_with_no_question_before_it_is_out_of_hours() -> None:
    script = bot({"kind": "message", "id": "hi", "text": "Hi", "next": "sales"}, HANDOFF_TO_1)
    state = BotState(script=script)
    step = begin(state, FakeWorld(open_groups=frozenset({2})), person=True)
    assert step == Step(
        [Say("Hi", "hi"), Say(CLOSED_MESSAGE, "sales", opens_at=OPENS_AT)], "out_of_hours"
    )
    assert (state.outcome, state.node, state.script) == ("out_of_hours", "sales", None)


def test_a_closed_group_with_nothing_open_is_out_of_hours_without_the_closed_message() -> None:
    script = bot(
        {
            "kind": "menu",
            "id": "menu",
            "text": "?",
            "options": [{"id": "buy", "label": "Buy", "next": "sales"}],
        },
        HANDOFF_TO_1,
    )
    state = BotState(script=script)
    nothing = FakeWorld(open_groups=frozenset())
    begin(state, nothing, person=True)
    assert answer(state, Reply(option="buy"), nothing, person=True)[1] == Step([], "out_of_hours")


def test_what_the_bot_collects_becomes_the_visitors_email_and_phone_only_when_it_is_one() -> None:
    """A field named ``phone`` collected as free text may hold anything: it joins the visitor's
    fields, but becomes their phone only if it is a phone number that fits (the store decodes
    the visitor with the limits of the ``start`` frame: 320 characters for an e-mail address,
    64 for a phone). Before, a long one was taken and the conversation no longer loaded."""
    script = bot(
        {"kind": "ask", "id": "p", "text": "Phone?", "field": "phone", "next": "e"},
        {
            "kind": "ask",
            "id": "e",
            "text": "E-mail?",
            "field": "email",
            "input": "email",
            "next": "bye",
        },
        END,
    )
    long = "call me on weekdays between nine and five, or leave a message; " * 2 + "thanks"
    for visitor, phone, email, kept in [
        (Visitor("Vera"), long, "vera@example.com", {"email": "vera@example.com"}),
        (
            Visitor("Vera"),
            "+351 912 345 678",
            "v@example.com",
            {"phone": "+351 912 345 678", "email": "v@example.com"},
        ),
        (
            Visitor("Vera", email="own@example.com"),
            "123",
            "v@example.com",
            {"email": "own@example.com"},
        ),
    ]:
        run = Run(script, plain_context(script), visitor, T0)
        run.step(BotAnswer("r1", text=phone), 1.0)
        run.step(BotAnswer("r2", text=email), 1.0)
        visitor = run.conv.visitor
        assert visitor.fields == {"phone": phone, "email": email}
        assert {k: getattr(visitor, k) for k in ("email", "phone") if getattr(visitor, k)} == kept
        assert msgspec.convert(msgspec.to_builtins(visitor), Visitor) == visitor


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda b: b["nodes"][0]["options"][0].update(next="nowhere"),
            "node 'menu' leads to 'nowhere'",
        ),
        (lambda b: b["nodes"].append(dict(END)), "node 'bye' is defined twice"),
        (lambda b: b["nodes"].append({**END, "id": "lost"}), "node 'lost' cannot be reached"),
        (lambda b: b.update(start="nowhere"), "start: there is no node 'nowhere'"),
    ],
)
def test_the_validator_names_the_node(change: Any, named: str) -> None:
    body = {
        "id": "b",
        "name": "B",
        "start": "menu",
        "nodes": copy.deepcopy([MENU, END, {"kind": "handoff", "id": "billing", "group": 1}]),
    }
    bot(*body["nodes"])
    change(body)
    with pytest.raises(msgspec.ValidationError, match=re.escape(f"bot b: {named}")):
        msgspec.convert(body, Bot)


def test_the_validator_refuses_a_loop_with_no_way_out_and_one_with_no_question() -> None:
    trap = {
        "kind": "menu",
        "id": "trap",
        "text": "Again?",
        "options": [{"id": "again", "label": "Again", "next": "trap"}],
    }
    start = {**MENU, "options": [*MENU["options"], {"id": "t", "label": "T", "next": "trap"}]}
    billing = {"kind": "handoff", "id": "billing", "group": 1}
    with pytest.raises(msgspec.ValidationError, match=r"node 'trap' never leads to a hand-off"):
        bot(start, END, billing, trap)
    loop = {"kind": "message", "id": "loop", "text": "Hmm", "next": "check"}
    check = {
        **NIGHT,
        "id": "check",
        "rules": [{**NIGHT["rules"][0], "next": "loop"}],
        "otherwise": "bye",
    }
    start = {**MENU, "options": [*MENU["options"], {"id": "l", "label": "L", "next": "loop"}]}
    with pytest.raises(
        msgspec.ValidationError, match=r"node '(loop|check)' is on a loop without a question"
    ):
        bot(start, END, billing, loop, check)
    with pytest.raises(msgspec.ValidationError, match=r"node 'q': a choice needs at least two"):
        bot(
            {
                "kind": "ask",
                "id": "q",
                "text": "?",
                "field": "f",
                "input": "choice",
                "choices": ["A"],
                "next": "bye",
            },
            END,
        )


@pytest.mark.parametrize("typed", ["1_000", "1e3", "nan", "inf", "٣", "1.2.3", "+", "1,"])
def test_a_number_is_typed_as_people_type_numbers(typed: str) -> None:
    node = AskNode(id="n", text="How many?", field="n", next="x", input=InputKind.NUMBER)
    assert check_answer(node, typed) is None
    assert check_answer(node, "-12,5") == "-12,5"
    assert check_answer(node, "3.25") == "3.25"


def test_number_bounds_must_be_finite() -> None:
    with pytest.raises(ValueError, match="node 'n': min and max must be finite"):
        Bot(
            id="b",
            name="B",
            start="n",
            nodes=(
                AskNode(
                    id="n", text="?", field="n", next="h", input=InputKind.NUMBER, min=float("nan")
                ),
                HandoffNode(id="h", group=1),
            ),
        )
