"""The visitor WebChat's plain ES modules, unit by unit, in real headless Chromium.

``state.js`` (the pure reducer) and ``protocol.js`` (the socket client) are served as they are
on disk by a foreign site, with ``/fakes.js`` beside them: a socket, a clock and a storage the
test drives by hand, so that back-off, jitter and throttling are checked without waiting and
every frame the client sends is seen. A scenario runs in the page (an ``evaluate``) and returns
plain values; the assertions are here, in Python.

Every state handed to ``reduce`` is deep-frozen first: a reducer that changed the state it was
given would throw (modules are strict code).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import Browser, Page
from tests.browser.site import JS, ForeignSite

pytestmark = pytest.mark.browser

WEBCHAT = Path(__file__).resolve().parents[2] / "omni" / "pages" / "static" / "webchat"
#: The modules under test, read once: served as they are.
MODULES = {
    name: (WEBCHAT / name).read_text(encoding="utf-8") for name in ("state.js", "protocol.js")
}

#: protocol.js's constants: back-off from 0.5 s, doubling up to 30 s; typing every 3 s at most.
BACKOFF_FIRST = 500
BACKOFF_MAX = 30_000
TYPING_EVERY = 3_000

FAKES = r"""
// Test doubles for protocol.js, and a way to feed the reducer frozen states.
import { Connection } from "/webchat/protocol.js";

export function deepFreeze(value) {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

/** Every state after each event, each event given a deep-frozen state. */
export function play(reduce, state, events) {
  const states = [];
  for (const event of events) {
    state = reduce(deepFreeze(state), event);
    states.push(state);
  }
  return states;
}

/** Time and randomness by hand: timers run only when the test lets time pass; random()
 * gives `randoms` in turn, the last one for ever. */
export class FakeClock {
  constructor(randoms = [0.5]) {
    this.t = 1_700_000_000_000;
    this.randoms = [...randoms];
    this.timers = [];
    this.delays = []; // every delay ever asked for, in order
    this.nextId = 1;
  }
  now = () => this.t;
  random = () => (this.randoms.length > 1 ? this.randoms.shift() : this.randoms[0]);
  setTimeout = (fn, ms) => {
    const id = this.nextId++;
    this.timers.push({ id, fn, at: this.t + ms });
    this.delays.push(ms);
    return id;
  };
  clearTimeout = (id) => {
    this.timers = this.timers.filter((timer) => timer.id !== id);
  };
  /** Let `ms` pass, running the timers that fall due on the way, in order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers
        .filter((timer) => timer.at <= end)
        .sort((a, b) => a.at - b.at || a.id - b.id)[0];
      if (!due) break;
      this.timers = this.timers.filter((timer) => timer !== due);
      this.t = due.at;
      due.fn();
    }
    this.t = end;
  }
}

/** A WebSocket whose server is the test: accept(), deliver(frames), drop(). Like a browser's,
 * close() only starts closing: the close event comes when the test drops it. */
export class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = null;
  }
  send(data) {
    if (this.readyState !== 1) throw new Error(`send() while readyState is ${this.readyState}`);
    this.sent.push(JSON.parse(data));
  }
  close(code) {
    this.closedWith = code ?? 1005;
    if (this.readyState < 2) this.readyState = 2;
  }
  accept() {
    this.readyState = 1;
    this.onopen({});
  }
  deliver(...frames) {
    for (const frame of frames) this.onmessage({ data: JSON.stringify(frame) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose({ code, wasClean: false });
  }
}

/** localStorage's shape, recording every write. */
export class MemoryStorage {
  constructor(items = {}) {
    this.items = new Map(Object.entries(items));
    this.writes = [];
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
    this.writes.push([key, String(value)]);
  }
  removeItem(key) {
    this.items.delete(key);
  }
  dump() {
    return Object.fromEntries(this.items);
  }
}

export const URL = "ws://omni.test/ws/visitor";
export const START = { service_id: 7, visitor: { name: "Vera" } };
export const STARTED = {
  type: "started", conversation_id: "C1", ticket: "2026-000001", token: "tok-1",
  service: { id: 7, name: "Support", avatar: { name: "Ana", image: null } },
};

export function message(seq, kind = "operator", text = `text ${seq}`) {
  const author = kind === "operator" ? { kind, name: "Alice", id: 1 } : { kind, name: "Vera" };
  const at = "2026-11-25T12:00:00Z";
  return { type: "message", conversation_id: "C1", seq, id: `C1-${seq}`, author, text, at };
}

export function resumed(status = "active") {
  return { type: "resumed", conversation_id: "C1", ticket: "2026-000001", status, last_seq: 0 };
}

/** A Connection on fakes, and what it told its listener. */
export function visitor({ storage = new MemoryStorage(), randoms = [0.5], service = 7 } = {}) {
  const clock = new FakeClock(randoms);
  const sockets = [];
  class Socket extends FakeSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
    }
  }
  const frames = [];
  const statuses = [];
  const connection = new Connection({
    url: URL, service, storage, clock, WebSocket: Socket,
    onFrame: (frame) => frames.push(frame),
    onStatus: (status) => statuses.push(status),
  });
  return {
    connection, clock, sockets, storage, frames, statuses,
    get ws() { return sockets.at(-1); },
    /** Every frame every socket sent, in order, as [socket index, frame]. */
    get sent() { return sockets.flatMap((s, i) => s.sent.map((frame) => [i, frame])); },
    /** Let the pending reconnect timer run, and the server accept the new socket. */
    reconnect() {
      const before = sockets.length;
      this.clock.advance(this.clock.delays.at(-1));
      if (sockets.length !== before + 1) throw new Error("no new socket after the delay");
      this.ws.accept();
    },
  };
}

/** A visitor whose conversation has started (token "tok-1"). */
export function started(options) {
  const v = visitor(options);
  v.connection.open();
  v.connection.start(START);
  v.ws.accept();
  v.ws.deliver(STARTED);
  return v;
}
"""

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Modules</title>
<script type="module">
import * as state from "/webchat/state.js";
import * as protocol from "/webchat/protocol.js";
import * as fakes from "/fakes.js";
window.W = { ...state, ...protocol, ...fakes };
</script></head><body><main></main></body></html>"""

#: The service's public configuration, as far as the reducer reads it.
CONFIG = {"id": 7, "name": "Support", "avatar": {"name": "Ana", "image": None}, "opens_at": None}


@pytest.fixture
async def page(browser: Browser, foreign_site: ForeignSite) -> AsyncIterator[Page]:
    """A blank page that has imported the modules and the fakes (as ``window.W``)."""
    for name, text in MODULES.items():
        foreign_site.serve(f"/webchat/{name}", text, JS)
    foreign_site.serve("/fakes.js", FAKES, JS)
    opened = await browser.new_page()
    assert await opened.goto(foreign_site.serve("/", PAGE)) == 200
    await opened.wait_for_function("window.W !== undefined")
    yield opened
    await opened.close()  # nothing is drawn: no last screenshot to take


async def run(page: Page, body: str, arg: Any = None) -> Any:
    """Run ``body``, the statements of a function of ``arg`` with the modules and fakes as
    ``W``, in the page; what it returns."""
    return await page.evaluate("async (arg) => {\nconst W = window.W;\n" + body + "\n}", arg)


async def states(
    page: Page, events: list[dict[str, Any]], config: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The reducer's state after each of ``events``, from ``initial(config)``."""
    result: list[dict[str, Any]] = await run(
        page,
        "return W.play(W.reduce, W.initial(arg.config), arg.events);",
        {"config": config or CONFIG, "events": events},
    )
    return result


# -- frames and actions, as the page hands them to the reducer -------------------------------


def started_frame(avatar: str = "Bia", bot: bool = False) -> dict[str, Any]:
    service: dict[str, Any] = {
        "id": 7,
        "name": "Support",
        "avatar": {"name": avatar, "image": None},
    }
    if bot:
        service["bot"] = True
    return {
        "type": "started",
        "conversation_id": "C1",
        "ticket": "2026-000001",
        "token": "tok-1",
        "service": service,
    }


def assigned(seq: int, name: str = "Alice") -> dict[str, Any]:
    return {
        "type": "assigned",
        "conversation_id": "C1",
        "seq": seq,
        "operator": {"id": 1, "name": name},
        "avatar": {"name": "Ana", "image": None},
        "conversation": {"id": "C1", "ticket": "2026-000001", "visitor": {"name": "Vera"}},
    }


def message(seq: int, text: str, kind: str = "operator") -> dict[str, Any]:
    author = {"kind": "operator", "name": "Alice", "id": 1}
    if kind == "visitor":
        author = {"kind": "visitor", "name": "Vera"}
    return {
        "type": "message",
        "conversation_id": "C1",
        "seq": seq,
        "id": f"C1-{seq}",
        "author": author,
        "text": text,
        "at": "2026-11-25T12:00:00Z",
    }


def send(client_id: str, text: str) -> dict[str, Any]:
    return {"action": "send", "clientId": client_id, "text": text, "at": "2026-11-25T12:00:01Z"}


def ack(client_id: str, seq: int) -> dict[str, Any]:
    return {"type": "ack", "conversation_id": "C1", "client_id": client_id, "seq": seq}


def error(code: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": f"{code}!", **fields}


ACTIVE = [{"action": "starting", "name": "Vera"}, started_frame(), assigned(1)]


def shown(state: dict[str, Any]) -> list[tuple[str, int | None, str | None, str]]:
    """The messages as (key, seq, text or notice, status)."""
    return [
        (m["key"], m["seq"], m.get("text", m.get("notice")), m["status"]) for m in state["messages"]
    ]


# == state.js: the reducer =====================================================================


async def test_a_replayed_seq_is_shown_once(page: Page) -> None:
    # The same stored events again (a replay): nothing is added, nothing counted twice.
    result = await states(
        page,
        [
            *ACTIVE,
            message(2, "Hi Vera"),
            assigned(1),
            message(2, "Hi Vera"),
            message(2, "another text under the same seq"),
        ],
    )
    once = result[len(ACTIVE)]
    assert shown(once) == [("s1", 1, "assigned", "sent"), ("s2", 2, "Hi Vera", "sent")]
    assert once["unread"] == 1
    assert result[-3:] == [once] * 3


async def test_a_stored_message_goes_before_the_visitors_pending_ones(page: Page) -> None:
    *_, pending, replied, first_acked, between, both_acked = await states(
        page,
        [
            *ACTIVE,
            send("v-a", "first"),
            send("v-b", "second"),
            message(3, "reply"),
            ack("v-a", 4),
            message(5, "another"),
            ack("v-b", 6),
        ],
    )
    assert shown(pending)[1:] == [
        ("v-a", None, "first", "sending"),
        ("v-b", None, "second", "sending"),
    ]
    assert pending["messages"][1]["author"] == {"kind": "visitor", "name": "Vera"}
    # Stored (seq 3) before what is still on its way.
    assert shown(replied)[1:] == [
        ("s3", 3, "reply", "sent"),
        ("v-a", None, "first", "sending"),
        ("v-b", None, "second", "sending"),
    ]
    # The ack makes it "sent" in place, under its client_id, with its seq.
    assert shown(first_acked)[1:] == [
        ("s3", 3, "reply", "sent"),
        ("v-a", 4, "first", "sent"),
        ("v-b", None, "second", "sending"),
    ]
    assert shown(between)[1:] == [
        ("s3", 3, "reply", "sent"),
        ("v-a", 4, "first", "sent"),
        ("s5", 5, "another", "sent"),
        ("v-b", None, "second", "sending"),
    ]
    assert shown(both_acked)[1:] == [
        ("s3", 3, "reply", "sent"),
        ("v-a", 4, "first", "sent"),
        ("s5", 5, "another", "sent"),
        ("v-b", 6, "second", "sent"),
    ]


async def test_a_pending_message_a_replay_shows_stored_is_replaced_not_duplicated(
    page: Page,
) -> None:
    # The connection dropped after the server stored "hello" but before its ack: the replay
    # brings it back as a message, then the resend's ack (same client_id, same seq) comes.
    *_, replayed, acked, sent, acked_first, replayed_after = await states(
        page,
        [
            *ACTIVE,
            send("v-a", "hello"),
            message(4, "hello", kind="visitor"),
            ack("v-a", 4),
            # The other order: the ack first, then a replay of the same seq.
            send("v-b", "again"),
            ack("v-b", 5),
            message(5, "again", kind="visitor"),
        ],
    )
    assert shown(replayed)[1:] == [("s4", 4, "hello", "sent"), ("v-a", None, "hello", "sending")]
    assert shown(acked)[1:] == [("s4", 4, "hello", "sent")]
    assert shown(sent)[1:] == [("s4", 4, "hello", "sent"), ("v-b", None, "again", "sending")]
    assert shown(acked_first)[1:] == [("s4", 4, "hello", "sent"), ("v-b", 5, "again", "sent")]
    assert replayed_after["messages"] == acked_first["messages"]
    # The visitor's own messages are no unread ones.
    assert replayed_after["unread"] == 0


async def test_a_conversation_goes_queued_active_ended_survey_closed(page: Page) -> None:
    questions = [{"id": "rating", "kind": "rating", "label": "Rate", "required": False}]
    events = [
        {"action": "starting", "name": "Vera"},
        started_frame(avatar="Bia"),
        {"type": "queued", "conversation_id": "C1", "position": 2, "estimated_wait": 60},
        {"type": "queued", "conversation_id": "C1", "position": 1},
        assigned(1, "Alice"),
        message(2, "Hi Vera"),
        {"type": "ended", "conversation_id": "C1", "seq": 3, "by": "operator"},
        {"type": "survey", "conversation_id": "C1", "seq": 4, "questions": questions},
        {"action": "survey_sent"},
        {"type": "closed", "conversation_id": "C1", "seq": 5, "message": "Bye!"},
    ]
    result = await states(page, events)
    assert [s["phase"] for s in result] == [
        "starting",
        "queued",
        "queued",
        "queued",
        "active",
        "active",
        "ended",
        "survey",
        "survey",
        "closed",
    ]
    starting, begun, second, first, active, _, ended, survey, answered, closed = result
    assert (starting["visitorName"], starting["error"]) == ("Vera", None)
    assert (begun["conversationId"], begun["ticket"]) == ("C1", "2026-000001")
    assert begun["avatar"] == {"name": "Bia", "image": None}
    assert (second["position"], second["estimatedWait"]) == (2, 60)
    assert (first["position"], first["estimatedWait"]) == (1, None)
    assert active["operator"] == {"id": 1, "name": "Alice"}
    assert (active["position"], active["estimatedWait"]) == (None, None)
    assert active["messages"][0] == {
        "key": "s1",
        "seq": 1,
        "author": {"kind": "system"},
        "notice": "assigned",
        "name": "Alice",
        "at": None,
        "status": "sent",
    }
    assert ended["endedBy"] == "operator"
    assert shown(ended)[-1] == ("s3", 3, "ended_operator", "sent")
    assert survey["survey"] == {"questions": questions}
    assert answered["surveySent"] is True
    assert (closed["closingMessage"], closed["survey"]) == ("Bye!", None)
    assert shown(closed) == [
        ("s1", 1, "assigned", "sent"),
        ("s2", 2, "Hi Vera", "sent"),
        ("s3", 3, "ended_operator", "sent"),
    ]


async def test_resumed_takes_the_phase_from_the_conversations_status(page: Page) -> None:
    # A reload: "resuming", then the server's status decides what shows.
    expected = {
        "queued": "queued",
        "offered": "queued",
        "active": "active",
        "ended": "ended",
        "out_of_hours": "out_of_hours",
        "closed": "closed",
        "abandoned": "closed",
    }
    for status, phase in expected.items():
        frame = {"type": "resumed", "conversation_id": "C1", "ticket": "T", "status": status}
        *_, last = await states(page, [{"action": "resuming"}, frame])
        assert (last["phase"], last["conversationId"], last["ticket"]) == (phase, "C1", "T")
    # Ended with the survey already shown (a resume on the same page): the survey stays.
    survey = {"type": "survey", "conversation_id": "C1", "seq": 4, "questions": []}
    again = {"type": "resumed", "conversation_id": "C1", "ticket": "T", "status": "ended"}
    *_, last = await states(page, [*ACTIVE, survey, again])
    assert last["phase"] == "survey"


async def test_out_of_hours_keeps_its_message_and_opening_time(page: Page) -> None:
    config = CONFIG | {"opens_at": "2026-11-25T08:00:00Z"}
    closed = {
        "type": "out_of_hours",
        "conversation_id": "C1",
        "seq": 1,
        "message": "We are closed.",
        "opens_at": "2026-11-25T09:00:00Z",
    }
    old_server = {k: v for k, v in closed.items() if k != "opens_at"}
    begin = [{"action": "starting", "name": "Vera"}, started_frame()]
    result = await states(page, [*begin, closed, send("v-a", "call me"), ack("v-a", 2)], config)
    assert result[0]["opensAt"] == "2026-11-25T08:00:00Z"  # the configuration's, at first
    *_, out, sending, acked = result
    assert (out["phase"], out["outOfHoursMessage"], out["opensAt"]) == (
        "out_of_hours",
        "We are closed.",
        "2026-11-25T09:00:00Z",
    )
    # The visitor may still leave messages: stored and acked, the page stays out of hours.
    assert sending["phase"] == acked["phase"] == "out_of_hours"
    assert shown(acked) == [("v-a", 2, "call me", "sent")]
    assert acked["outOfHoursMessage"] == "We are closed."
    # A server that sends no opens_at: the time stays what was known.
    *_, last = await states(page, [*begin, old_server], config)
    assert (last["phase"], last["opensAt"]) == ("out_of_hours", "2026-11-25T08:00:00Z")


async def test_the_operators_typing_shows_then_expires_or_ends_with_their_message(
    page: Page,
) -> None:
    typing = {"type": "typing", "conversation_id": "C1", "author": {"kind": "operator"}}
    result = await states(
        page,
        [
            *ACTIVE,
            typing | {"now": 1000},
            {"action": "tick", "now": 6999},
            {"action": "tick", "now": 7000},
            typing | {"now": 10_000},
            message(2, "mine", kind="visitor"),
            message(3, "theirs"),
            typing | {"now": 20_000},
            {"type": "ended", "conversation_id": "C1", "seq": 4, "by": "visitor"},
            {"action": "tick", "now": 99_000},
        ],
    )
    assert [s["typingUntil"] for s in result[len(ACTIVE) :]] == [
        7000,  # shows for 6 s from when it came
        7000,  # still showing 1 ms before
        0,  # expired by the page's tick
        16_000,
        16_000,  # the visitor's own message does not clear it
        0,  # the operator's message does
        26_000,
        0,  # the end does
        0,
    ]


async def test_unread_counts_only_new_operator_messages_until_seen(page: Page) -> None:
    # The page says "seen" while the visitor watches (page visible, widget open): the badge
    # counts the operator's messages that came since.
    result = await states(
        page,
        [
            *ACTIVE,  # a notice (assigned) is no message to read
            message(2, "one"),
            message(3, "mine", kind="visitor"),
            message(4, "two"),
            message(4, "two"),  # a replay
            {"action": "seen"},
            message(5, "three"),
        ],
    )
    assert [s["unread"] for s in result] == [0, 0, 0, 1, 1, 2, 2, 0, 1]
    assert [s["seenSeq"] for s in result[-2:]] == [4, 4]
    # A reload replays everything: what was seen before it (remembered by the page) is not
    # unread again; only the newer operator messages are.
    replay = [assigned(1), message(2, "one"), message(3, "mine", kind="visitor")]
    result = await states(
        page,
        [
            {"action": "resuming"},
            {"action": "seen", "seq": 2},
            *replay,
            message(4, "two"),
            message(5, "three"),
            {"action": "seen"},
            {"action": "seen", "seq": 1},  # an older mark moves nothing back
        ],
    )
    assert [s["unread"] for s in result] == [0, 0, 0, 0, 0, 1, 2, 0, 0]
    assert [s["seenSeq"] for s in result] == [0, 2, 2, 2, 2, 2, 2, 5, 5]


async def test_refusals_go_back_to_the_form_or_make_the_page_unavailable(page: Page) -> None:
    starting = [{"action": "starting", "name": "Vera"}]
    # Refused while starting: the form again, saying why.
    for code in ("captcha_required", "captcha_failed", "invalid_identity", "rate_limited"):
        *_, last = await states(page, [*starting, error(code)])
        assert (last["phase"], last["error"]) == ("form", {"code": code, "message": f"{code}!"})
    # No CAPTCHA token yet: the page says so without asking the server.
    (last,) = await states(page, [{"action": "captcha_missing"}])
    assert (last["phase"], last["error"]["code"]) == ("form", "captcha_required")
    # Another tab took the conversation.
    *_, last = await states(page, [*ACTIVE, error("superseded")])
    assert (last["phase"], last["error"]["code"]) == ("unavailable", "superseded")
    # A form error in a conversation does not send the visitor back to the form.
    *_, last = await states(page, [*ACTIVE, error("rate_limited")])
    assert (last["phase"], last["error"]["code"]) == ("active", "rate_limited")
    # A message refused for good shows as failed; one rate-limited is left to be resent.
    *_, failed, limited = await states(
        page,
        [
            *ACTIVE,
            send("v-a", "a long text"),
            error("message_too_long", client_id="v-a"),
            error("rate_limited", client_id="v-a", retry_after=1),
        ],
    )
    assert failed["messages"][-1] == {
        "key": "v-a",
        "seq": None,
        "author": {"kind": "visitor", "name": "Vera"},
        "text": "a long text",
        "at": "2026-11-25T12:00:01Z",
        "status": "failed",
        "error": "message_too_long",
    }
    assert failed["error"]["code"] == "message_too_long"
    assert limited == failed
    # A bad survey answer lets the visitor answer again; transcript refusals stay there.
    *_, sent, refused, bad_email = await states(
        page, [*ACTIVE, {"action": "survey_sent"}, error("invalid_survey"), error("invalid_email")]
    )
    assert (sent["surveySent"], refused["surveySent"]) == (True, False)
    assert bad_email["transcript"] == {"sent": [], "error": "invalid_email"}


async def test_a_forgotten_or_new_conversation_starts_from_the_form(page: Page) -> None:
    for event in ({"type": "forgotten", "code": "invalid_token"}, {"action": "new_conversation"}):
        *_, last = await states(
            page, [{"action": "status", "status": "online"}, *ACTIVE, message(2, "hi"), event]
        )
        fresh = await run(page, "return W.initial(arg);", CONFIG)
        assert last == fresh | {"connection": "online"}


# -- the chatbot (F15) ---------------------------------------------------------------------------


PERSON = {"id": "@person", "label": "Talk to a person"}
MENU_OPTIONS = [{"id": "buy", "label": "Buy something"}, {"id": "bill", "label": "A bill"}, PERSON]


def bot(seq: int, node: str, text: str, **fields: Any) -> dict[str, Any]:
    """A `bot` frame: what the chatbot says (``options``, ``input``, ``opens_at`` as given)."""
    return {
        "type": "bot",
        "conversation_id": "C1",
        "seq": seq,
        "id": f"C1-{seq}",
        "text": text,
        "node": node,
        "at": "2026-11-25T12:00:00Z",
        **fields,
    }


def bot_reply(seq: int, text: str, option: str | None = None) -> dict[str, Any]:
    """The visitor's answer to the bot, as a replay brings it back."""
    frame = message(seq, text, kind="visitor") | {"type": "bot_reply"}
    return frame | ({"option": option} if option else {})


BEGUN = [{"action": "starting", "name": "Vera"}, started_frame(avatar="Shop", bot=True)]
GREETED = [
    *BEGUN,
    bot(1, "hello", "Hi! I am the shop's assistant."),
    bot(2, "menu", "What do you need?", options=MENU_OPTIONS),
]


async def with_questions(
    page: Page, events: list[dict[str, Any]], config: dict[str, Any] | None = None
) -> list[tuple[dict[str, Any], str | None]]:
    """Each state after ``events``, with the key of its open question (``openQuestion``)."""
    result: list[tuple[dict[str, Any], str | None]] = await run(
        page,
        """
        const all = W.play(W.reduce, W.initial(arg.config), arg.events);
        return all.map((s) => [s, (W.openQuestion(s) || { key: null }).key]);
        """,
        {"config": config or CONFIG, "events": events},
    )
    return result


async def test_the_bot_asks_the_visitor_answers_and_the_queue_takes_over(page: Page) -> None:
    events = [
        *GREETED,
        send("v-a", "Buy something"),  # the button: its label, pending until the ack
        ack("v-a", 3),
        bot(4, "email", "Your e-mail, please?", input="email", options=[PERSON]),
        send("v-b", "vera at example"),
        ack("v-b", 5),
        bot(6, "email", "That is not an e-mail address.", input="email", options=[PERSON]),
        send("v-c", "vera@example.com"),
        ack("v-c", 7),
        bot(8, "sales", "Passing you to Sales."),
        {"type": "queued", "conversation_id": "C1", "position": 1, "estimated_wait": None},
    ]
    result = await with_questions(page, events)
    phases = [s["phase"] for s, _ in result]
    questions = [q for _, q in result]
    # `started` says a bot answers first: no queue shows before its first word.
    assert phases == ["starting", *["bot"] * 12, "queued"]
    assert questions == [
        None, None, None,  # nothing asked yet (the greeting asks nothing)
        "s2",  # the menu
        None, None,  # answered (on its way, then stored)
        "s4", None, None,  # the e-mail
        "s6", None, None,  # asked again
        None,  # the hand-off asks nothing
        None,  # queued: the bot is done
    ]  # fmt: skip
    final = result[-1][0]
    assert shown(final) == [
        ("s1", 1, "Hi! I am the shop's assistant.", "sent"),
        ("s2", 2, "What do you need?", "sent"),
        ("v-a", 3, "Buy something", "sent"),
        ("s4", 4, "Your e-mail, please?", "sent"),
        ("v-b", 5, "vera at example", "sent"),
        ("s6", 6, "That is not an e-mail address.", "sent"),
        ("v-c", 7, "vera@example.com", "sent"),
        ("s8", 8, "Passing you to Sales.", "sent"),
    ]
    menu = final["messages"][1]
    # The bot speaks as the service (its avatar's name), with what the view needs to ask.
    assert menu["author"] == {"kind": "bot", "name": "Shop"}
    assert menu["bot"] == {"node": "menu", "options": MENU_OPTIONS, "input": None, "opensAt": None}
    assert final["messages"][3]["bot"]["input"] == "email"
    kinds = [m["author"]["kind"] for m in final["messages"]]
    assert kinds == ["bot", "bot", "visitor", "bot", "visitor", "bot", "visitor", "bot"]
    assert final["position"] == 1
    # What the bot says while the visitor is not looking counts on the widget's badge.
    assert final["unread"] == 5


async def test_a_refused_or_failed_answer_gives_the_question_back(page: Page) -> None:
    result = await with_questions(
        page,
        [
            *GREETED,
            send("v-a", "A bill"),
            error("invalid_reply", client_id="v-a", conversation_id="C1"),
            send("v-b", "Buy something"),
        ],
    )
    (pending, pending_q), (refused, refused_q), (_, again_q) = result[-3:]
    assert pending_q is None and pending["phase"] == "bot"
    assert refused["messages"][-1]["status"] == "failed"
    assert refused["error"]["code"] == "invalid_reply"
    assert refused_q == "s2"  # the options come back: the visitor may choose again
    assert again_q is None


async def test_a_closed_group_says_when_it_opens_then_asks_again(page: Page) -> None:
    opens = "2026-11-26T08:00:00Z"
    result = await with_questions(
        page,
        [
            *GREETED,
            send("v-a", "A bill"),
            ack("v-a", 3),
            bot(4, "billing", "Billing is closed now.", opens_at=opens),
            bot(5, "menu", "What do you need?", options=MENU_OPTIONS),
            send("v-b", "Nothing, thanks"),
            ack("v-b", 6),
            bot(7, "bye", "Goodbye!"),
            {"type": "ended", "conversation_id": "C1", "seq": 8, "by": "bot"},
            {"type": "closed", "conversation_id": "C1", "seq": 9, "message": "Thanks."},
        ],
    )
    closed_msg, closed_q = result[len(GREETED) + 2]
    assert closed_msg["messages"][-1]["bot"]["opensAt"] == opens
    assert closed_q is None  # a closed group's notice asks nothing
    again, again_q = result[len(GREETED) + 3]
    assert again_q == "s5"  # the menu again: the new one, not the old one
    assert again["phase"] == "bot"
    ended, ended_q = result[-2]
    assert (ended["phase"], ended["endedBy"], ended_q) == ("ended", "bot", None)
    assert shown(ended)[-1] == ("s8", 8, "ended_bot", "sent")
    assert result[-1][0]["phase"] == "closed"
    # Silent at the question: ended by the bot's timeout.
    *_, (timed_out, _) = await with_questions(
        page, [*GREETED, {"type": "ended", "conversation_id": "C1", "seq": 3, "by": "bot_timeout"}]
    )
    assert (timed_out["phase"], shown(timed_out)[-1]) == (
        "ended",
        ("s3", 3, "ended_bot_timeout", "sent"),
    )


async def test_a_reload_replays_the_bot_history_in_order_once(page: Page) -> None:
    resumed_bot = {"type": "resumed", "conversation_id": "C1", "ticket": "T", "status": "bot"}
    history = [
        bot(1, "hello", "Hi! I am the shop's assistant."),
        bot(2, "menu", "What do you need?", options=MENU_OPTIONS),
        bot_reply(3, "Buy something", option="buy"),
        bot(4, "email", "Your e-mail, please?", input="email", options=[PERSON]),
    ]
    # Reloaded at the e-mail question with an answer still on its way (kept in storage).
    result = await with_questions(
        page,
        [
            {"action": "resuming"},
            send("v-x", "vera@example.com"),
            resumed_bot | {"last_seq": 4},
            *history,
            *history,  # the same again (a second resume): nothing twice
            ack("v-x", 5),
            bot(6, "sales", "Passing you to Sales."),
        ],
    )
    assert {s["phase"] for s, _ in result[2:]} == {"bot"}
    assert all(q is None for _, q in result)  # answered: the answer is on its way
    final = result[-1][0]
    # The replay goes before the answer on its way, which the ack then settles in place.
    assert shown(final) == [
        ("s1", 1, "Hi! I am the shop's assistant.", "sent"),
        ("s2", 2, "What do you need?", "sent"),
        ("s3", 3, "Buy something", "sent"),
        ("s4", 4, "Your e-mail, please?", "sent"),
        ("v-x", 5, "vera@example.com", "sent"),
        ("s6", 6, "Passing you to Sales.", "sent"),
    ]
    assert final["messages"][2]["author"] == {"kind": "visitor", "name": "Vera"}
    # Reloaded without a pending answer: the question waits again, its options with it.
    *_, (waiting, waiting_q) = await with_questions(
        page, [{"action": "resuming"}, resumed_bot | {"last_seq": 4}, *history]
    )
    assert (waiting["phase"], waiting_q) == ("bot", "s4")
    # Reloaded after the hand-off: the bot's history shows, the queue keeps the page.
    resumed_queued = resumed_bot | {"status": "queued", "last_seq": 7}
    *_, (queued, queued_q) = await with_questions(
        page,
        [
            {"action": "resuming"},
            resumed_queued,
            *history,
            bot_reply(5, "vera@example.com"),
            bot(6, "sales", "Passing you to Sales."),
        ],
    )
    assert (queued["phase"], queued_q) == ("queued", None)
    assert [m["seq"] for m in queued["messages"]] == [1, 2, 3, 4, 5, 6]
    # And after the whole conversation (closed): the closing page stays.
    resumed_closed = resumed_bot | {"status": "closed", "last_seq": 9}
    *_, (closed, _) = await with_questions(
        page, [{"action": "resuming"}, resumed_closed, *history[:2]]
    )
    assert closed["phase"] == "closed"


# == protocol.js: the Connection ===============================================================


async def test_the_first_connection_binds_with_start(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.visitor();
        v.connection.open();  // nothing remembered: the form shows, and holds no socket
        const form = { sockets: v.sockets.length, statuses: [...v.statuses] };
        v.connection.start(W.START);
        const opening = { sockets: v.sockets.length, url: v.ws.url, statuses: [...v.statuses] };
        v.ws.accept();
        const start = [...v.ws.sent];
        v.ws.deliver(W.STARTED);
        return { form, opening, start, sockets: v.sockets.length, statuses: v.statuses,
                 frames: v.frames, hasConversation: v.connection.hasConversation,
                 stored: v.storage.dump() };
        """,
    )
    assert seen["form"] == {"sockets": 0, "statuses": []}
    assert seen["opening"] == {
        "sockets": 1,
        "url": "ws://omni.test/ws/visitor",
        "statuses": ["connecting"],
    }
    assert seen["start"] == [{"type": "start", "service_id": 7, "visitor": {"name": "Vera"}}]
    assert seen["sockets"] == 1
    assert seen["statuses"] == ["connecting", "online"]
    assert seen["frames"] == [
        {
            "type": "started",
            "conversation_id": "C1",
            "ticket": "2026-000001",
            "token": "tok-1",
            "service": {"id": 7, "name": "Support", "avatar": {"name": "Ana", "image": None}},
        }
    ]
    assert seen["hasConversation"] is True
    assert json.loads(seen["stored"]["omni.webchat.7"]) == {"token": "tok-1", "pending": []}


async def test_start_uses_one_socket_whatever_came_first(page: Page) -> None:
    # A signed-in visitor: the page calls start() before open(). Or start() comes while the
    # client waits to reconnect. Either way one socket carries one `start`, and no other
    # socket is left open behind the client's back.
    seen = await run(
        page,
        """
        const identity = W.visitor();
        identity.connection.start(W.START);
        identity.connection.open();
        identity.ws.accept();
        identity.ws.deliver(W.STARTED);

        const waiting = W.visitor();
        waiting.connection.start(W.START);
        waiting.ws.drop();  // the server is away: a reconnect is due in 250 ms
        waiting.connection.start(W.START);
        waiting.ws.accept();
        waiting.clock.advance(60_000);  // the reconnect timer's time comes and goes
        waiting.ws.deliver(W.STARTED);
        const report = (v) => ({
          sockets: v.sockets.map((s) => ({ state: s.readyState, sent: s.sent.map((f) => f.type) })),
          frames: v.frames.map((f) => f.type),
        });
        return [report(identity), report(waiting)];
        """,
    )
    identity, waiting = seen
    assert identity == {"sockets": [{"state": 1, "sent": ["start"]}], "frames": ["started"]}
    assert waiting == {
        "sockets": [{"state": 3, "sent": []}, {"state": 1, "sent": ["start"]}],
        "frames": ["started"],
    }


async def test_a_dropped_connection_resumes_with_the_token_and_the_last_seq(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started();
        v.ws.deliver(
          { type: "queued", conversation_id: "C1", position: 1, estimated_wait: null },
          W.message(1, "visitor"), W.message(2), W.message(3),
        );
        const mine = v.connection.message("mine");
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: mine, seq: 4 });
        v.ws.drop();
        const offline = [...v.statuses];
        v.reconnect();
        const resume = [...v.ws.sent];
        v.ws.deliver(W.resumed());
        return { offline, resume, statuses: v.statuses, sockets: v.sockets.length };
        """,
    )
    assert seen["offline"] == ["connecting", "online", "offline"]
    # The highest seq seen, the ack's included (docs/protocol.md §2.4).
    assert seen["resume"] == [{"type": "resume", "token": "tok-1", "last_seq": 4}]
    assert seen["statuses"][3:] == ["connecting", "online"]
    assert seen["sockets"] == 2


async def test_reconnects_back_off_with_full_jitter_up_to_the_maximum(page: Page) -> None:
    # Dyadic fractions: the delays are exact, so are the clock's sums.
    almost = 1023 / 1024
    randoms = [0.5, almost, 1 / 512, 0.25, 0.5, almost, almost, almost, 0.5, almost]
    seen = await run(
        page,
        """
        const v = W.started({ randoms: arg });
        const delays = [];
        const early = [];
        for (let i = 0; i < arg.length; i++) {
          v.ws.drop();
          const delay = v.clock.delays.at(-1);
          delays.push(delay);
          // Not a moment before its time; then one new socket.
          const before = v.sockets.length;
          v.clock.advance(Math.max(0, delay - 1));
          early.push(v.sockets.length - before);
          v.clock.advance(1);
          if (v.sockets.length !== before + 1) throw new Error(`no reconnect after ${delay} ms`);
          v.ws.accept();  // open, but never resumed: the server keeps dropping it
        }
        return { delays, early, resumes: v.sockets.slice(1).map((s) => s.sent) };
        """,
        randoms,
    )
    ceilings = [min(BACKOFF_MAX, BACKOFF_FIRST * 2**n) for n in range(len(randoms))]
    assert ceilings == [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
    # Full jitter: anywhere from 0 to the ceiling, by the clock's random().
    assert seen["delays"] == [pytest.approx(r * c) for r, c in zip(randoms, ceilings, strict=True)]
    assert all(0 <= d < c for d, c in zip(seen["delays"], ceilings, strict=True))
    assert max(seen["delays"]) < BACKOFF_MAX
    assert seen["early"] == [0] * len(randoms)
    assert seen["resumes"] == [[{"type": "resume", "token": "tok-1", "last_seq": 0}]] * len(randoms)


async def test_a_successful_resume_resets_the_back_off(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started({ randoms: [1] });  // each delay at its ceiling
        v.ws.drop(); v.reconnect();             // 500
        v.ws.drop(); v.reconnect();             // 1000: open is not enough
        v.ws.deliver(W.resumed());
        v.ws.drop(); v.reconnect();             // 500 again
        v.ws.drop();                            // 1000
        return v.clock.delays;
        """,
    )
    assert seen == [500, 1000, 500, 1000]


async def test_moved_reconnects_at_once_and_shows_nothing(page: Page) -> None:
    """Cluster mode: the node serving the conversation changed; the server says `moved` and
    closes; the page resumes on the next socket without a back-off or an error."""
    seen = await run(
        page,
        """
        const v = W.started({ randoms: [1] });  // each delay at its ceiling
        v.ws.drop(); v.reconnect();             // 500, then 1000 would be next
        v.ws.deliver({ type: "error", code: "moved", message: "elsewhere" });
        v.ws.drop(1012);
        const delay = v.clock.delays.at(-1);
        v.reconnect();
        const resume = [...v.ws.sent];
        v.ws.deliver(W.resumed());
        return { delay, resume, frames: v.frames.map((f) => f.code || f.type) };
        """,
    )
    assert seen["delay"] == 500  # the first ceiling again, not the next one
    assert seen["resume"] == [{"type": "resume", "token": "tok-1", "last_seq": 0}]
    assert seen["frames"] == ["started", "resumed"]


async def test_messages_sent_offline_are_resent_with_the_same_client_id(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started();
        const online = v.connection.message("while online");
        v.clock.advance(1);
        v.ws.drop();
        const one = v.connection.message("one");
        const offline = { pending: v.connection.unacknowledged, sent: v.sent.map(([, f]) => f) };
        v.reconnect();  // open, `resume` sent, not bound yet
        v.clock.advance(1);
        const two = v.connection.message("two");
        const unbound = [...v.ws.sent];
        v.ws.deliver(W.resumed());
        const resent = [...v.ws.sent];
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: online, seq: 1 });
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: one, seq: 2 });
        const afterAcks = v.connection.unacknowledged;
        v.ws.drop();
        v.reconnect();
        v.ws.deliver(W.resumed());
        const again = [...v.ws.sent];
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: two, seq: 3 });
        return { ids: [online, one, two], offline, unbound, resent, afterAcks, again,
                 last: v.connection.unacknowledged,
                 acks: v.frames.filter((f) => f.type === "ack").map((f) => f.client_id) };
        """,
    )
    online, one, two = seen["ids"]
    assert len(set(seen["ids"])) == 3
    assert all(i.startswith("v-") for i in seen["ids"])
    assert seen["offline"]["pending"] == [[online, "while online"], [one, "one"]]
    # Offline: nothing goes out (the online one went at once).
    assert seen["offline"]["sent"] == [
        {"type": "start", "service_id": 7, "visitor": {"name": "Vera"}},
        {"type": "message", "client_id": online, "text": "while online"},
    ]
    # Connected but not bound yet: nothing either (the server would answer `not_started`).
    assert seen["unbound"] == [{"type": "resume", "token": "tok-1", "last_seq": 0}]
    # Bound again: `resume` first, then every unacknowledged message under its first id.
    assert seen["resent"] == [
        {"type": "resume", "token": "tok-1", "last_seq": 0},
        {"type": "message", "client_id": online, "text": "while online"},
        {"type": "message", "client_id": one, "text": "one"},
        {"type": "message", "client_id": two, "text": "two"},
    ]
    assert seen["afterAcks"] == [[two, "two"]]
    assert seen["again"] == [
        {"type": "resume", "token": "tok-1", "last_seq": 2},
        {"type": "message", "client_id": two, "text": "two"},
    ]
    assert seen["last"] == []
    assert seen["acks"] == [online, one, two]


async def test_a_rate_limited_message_is_sent_again_after_retry_after(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started();
        const id = v.connection.message("hello");
        v.ws.deliver({ type: "error", code: "rate_limited", message: "slow down", client_id: id,
                       retry_after: 1.5 });
        const delay = v.clock.delays.at(-1);
        v.clock.advance(1499);
        const early = v.ws.sent.length;
        v.clock.advance(1);
        return { id, delay, early, sent: v.ws.sent.slice(1), pending: v.connection.unacknowledged,
                 frames: v.frames.map((f) => f.type) };
        """,
    )
    assert seen["delay"] == 1500
    assert seen["early"] == 2  # start and the first try
    message = {"type": "message", "client_id": seen["id"], "text": "hello"}
    assert seen["sent"] == [message, message]
    assert seen["pending"] == [[seen["id"], "hello"]]
    assert seen["frames"] == ["started", "error"]


async def test_a_message_refused_for_good_is_not_kept_or_resent(page: Page) -> None:
    # The reducer shows it "not sent" for good: the client must not send it again after each
    # reconnect, nor bring it back as "sending" after a reload.
    seen = await run(
        page,
        """
        const v = W.started();
        const refused = v.connection.message("too long");
        v.clock.advance(1);
        const kept = v.connection.message("fine");
        v.ws.deliver({ type: "error", code: "message_too_long", message: "too long",
                       conversation_id: "C1", client_id: refused });
        const pending = v.connection.unacknowledged;
        v.ws.drop();
        v.reconnect();
        v.ws.deliver(W.resumed());
        return { kept, pending, resent: v.ws.sent.slice(1),
                 stored: JSON.parse(v.storage.getItem("omni.webchat.7")),
                 frames: v.frames.map((f) => f.code || f.type) };
        """,
    )
    kept = seen["kept"]
    assert seen["pending"] == [[kept, "fine"]]
    assert seen["resent"] == [{"type": "message", "client_id": kept, "text": "fine"}]
    assert seen["stored"] == {"token": "tok-1", "pending": [[kept, "fine"]]}
    assert seen["frames"] == ["started", "message_too_long", "resumed"]


async def test_a_seq_already_seen_is_passed_on_once(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started();
        const typing = { type: "typing", conversation_id: "C1", author: { kind: "operator" } };
        v.ws.deliver(W.message(1), W.message(2), typing, W.message(2), typing);
        v.ws.drop();
        const old = v.ws;
        v.reconnect();
        const resume = v.ws.sent[0];
        // The replay overlaps what was seen; the old socket's late frames are not heard.
        v.ws.deliver(W.resumed(), W.message(1), W.message(2), W.message(3), W.message(3));
        old.deliver(W.message(4));
        v.ws.deliver({ type: "closed", conversation_id: "C1", seq: 4, message: "Bye!" });
        const name = (f) => (f.seq === undefined ? f.type : `${f.type} ${f.seq}`);
        return { resume, frames: v.frames.map(name) };
        """,
    )
    assert seen["resume"] == {"type": "resume", "token": "tok-1", "last_seq": 2}
    # Frames without a seq (ephemeral) are passed on every time.
    assert seen["frames"] == [
        "started",
        "message 1",
        "message 2",
        "typing",
        "typing",
        "resumed",
        "message 3",
        "closed 4",
    ]


async def test_storage_keeps_the_token_and_the_pending_messages_only(page: Page) -> None:
    other = json.dumps({"token": "another service's", "pending": []})
    seen = await run(
        page,
        """
        const storage = new W.MemoryStorage({ "omni.webchat.8": arg, unrelated: "kept" });
        const v = W.visitor({ storage });
        v.connection.open();
        v.connection.start(W.START);
        v.ws.accept();
        const beforeToken = storage.writes.length;
        v.ws.deliver(W.STARTED, W.message(1, "operator", "SECRET operator text"));
        const acked = v.connection.message("acked text");
        v.clock.advance(1);
        const waiting = v.connection.message("waiting text");
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: acked, seq: 2 });
        v.ws.deliver(W.message(3, "operator", "SECRET reply"));

        // A reload: a new page, the same storage.
        const reloaded = W.visitor({ storage });
        const remembered = { has: reloaded.connection.hasConversation,
                             pending: reloaded.connection.unacknowledged };
        reloaded.connection.open();
        reloaded.ws.accept();
        reloaded.ws.deliver(W.resumed());
        return { beforeToken, ids: [acked, waiting], writes: storage.writes, dump: storage.dump(),
                 remembered, sent: reloaded.ws.sent };
        """,
        other,
    )
    _, waiting = seen["ids"]
    assert seen["beforeToken"] == 0  # nothing to remember before there is a conversation
    for key, value in seen["writes"]:
        assert key == "omni.webchat.7"
        assert "SECRET" not in value
        saved = json.loads(value)
        assert list(saved) == ["token", "pending"]
        assert saved["token"] == "tok-1"
        assert all(text in ("acked text", "waiting text") for _, text in saved["pending"])
    assert json.loads(seen["dump"].pop("omni.webchat.7")) == {
        "token": "tok-1",
        "pending": [[waiting, "waiting text"]],
    }
    assert seen["dump"] == {"omni.webchat.8": other, "unrelated": "kept"}
    assert seen["remembered"] == {"has": True, "pending": [[waiting, "waiting text"]]}
    # A reloaded page has shown nothing: it resumes from the start, and resends.
    assert seen["sent"] == [
        {"type": "resume", "token": "tok-1", "last_seq": 0},
        {"type": "message", "client_id": waiting, "text": "waiting text"},
    ]


async def test_forget_clears_the_storage_and_stops_reconnecting(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.started();
        v.ws.deliver(W.message(1));
        const id = v.connection.message("never acked");
        v.connection.forget();
        const after = { stored: v.storage.dump(), has: v.connection.hasConversation,
                        pending: v.connection.unacknowledged };
        v.ws.drop();  // nothing to resume: no reconnect
        v.clock.advance(120_000);
        const dropped = { sockets: v.sockets.length, statuses: [...v.statuses],
                          timers: v.clock.delays.length };
        // The next conversation starts afresh: `start`, and not the forgotten message.
        v.connection.start(W.START);
        v.ws.accept();

        // A conversation the server no longer knows: forgotten the same way, and said so.
        const gone = W.started();
        gone.ws.drop();
        gone.reconnect();
        gone.ws.deliver({ type: "error", code: "invalid_token", message: "no conversation" });
        gone.ws.drop(1008);  // the server closes the idle socket later: no reconnect
        gone.clock.advance(120_000);
        return { id, after, dropped, sent: v.sent,
                 gone: { stored: gone.storage.dump(), frames: gone.frames.map((f) => f.type),
                         forgotten: gone.frames.at(-1), has: gone.connection.hasConversation,
                         sockets: gone.sockets.length } };
        """,
    )
    assert seen["after"] == {"stored": {}, "has": False, "pending": []}
    assert seen["dropped"] == {"sockets": 1, "statuses": ["connecting", "online"], "timers": 0}
    start = {"type": "start", "service_id": 7, "visitor": {"name": "Vera"}}
    assert seen["sent"] == [
        [0, start],
        [0, {"type": "message", "client_id": seen["id"], "text": "never acked"}],
        [1, start],  # not followed by the forgotten message
    ]
    assert seen["gone"] == {
        "stored": {},
        "frames": ["started", "forgotten"],
        "forgotten": {"type": "forgotten", "code": "invalid_token"},
        "has": False,
        "sockets": 2,
    }


async def test_close_and_superseded_stop_reconnecting(page: Page) -> None:
    seen = await run(
        page,
        """
        // The page leaves.
        const left = W.started();
        left.connection.close();
        const closedWith = left.ws.closedWith;
        left.ws.drop(1000);
        left.clock.advance(120_000);

        // Offline and waiting to reconnect when it leaves: the timer is cancelled.
        const waiting = W.started();
        waiting.ws.drop();
        waiting.connection.close();
        waiting.clock.advance(120_000);

        // Another tab took the conversation: no fight over it.
        const superseded = W.started();
        superseded.ws.deliver({ type: "error", code: "superseded", message: "elsewhere" });
        superseded.ws.drop(1008);
        superseded.clock.advance(120_000);

        // A new conversation (the page's forget, close, open, then the form's start): no
        // socket until `start`, then one at once, whenever the old one's close event comes.
        const fresh = W.started();
        fresh.connection.forget();
        fresh.connection.close();
        fresh.connection.open();
        const idle = fresh.sockets.length;
        fresh.connection.start(W.START);
        fresh.sockets[0].drop(1000);  // the old socket's close event, late
        fresh.ws.accept();
        fresh.ws.deliver({ ...W.STARTED, conversation_id: "C2", token: "tok-2" });
        const report = (v) => ({ sockets: v.sockets.length, statuses: v.statuses,
                                 frames: v.frames.map((f) => f.code || f.type) });
        return { closedWith, left: report(left), waiting: report(waiting),
                 superseded: report(superseded), idle, fresh: report(fresh),
                 freshSent: fresh.sent, stored: fresh.storage.dump() };
        """,
    )
    assert seen["closedWith"] == 1000
    bound = ["connecting", "online"]
    assert seen["left"] == {"sockets": 1, "statuses": bound, "frames": ["started"]}
    assert seen["waiting"] == {
        "sockets": 1,
        "statuses": [*bound, "offline"],
        "frames": ["started"],
    }
    assert seen["superseded"] == {
        "sockets": 1,
        "statuses": bound,
        "frames": ["started", "superseded"],
    }
    assert seen["idle"] == 1
    assert seen["fresh"] == {
        "sockets": 2,
        "statuses": [*bound, "connecting", "online"],
        "frames": ["started", "started"],
    }
    start = {"type": "start", "service_id": 7, "visitor": {"name": "Vera"}}
    assert seen["freshSent"] == [[0, start], [1, start]]
    assert json.loads(seen["stored"]["omni.webchat.7"]) == {"token": "tok-2", "pending": []}


async def test_typing_sends_at_most_one_frame_per_window(page: Page) -> None:
    seen = await run(
        page,
        """
        const v = W.visitor();
        v.connection.start(W.START);
        v.ws.accept();
        v.connection.typing();  // not bound to a conversation yet: nothing
        v.ws.deliver(W.STARTED);
        const times = [];
        // A key every 250 ms for 7 s.
        for (let ms = 0; ms <= 7000; ms += 250) {
          const before = v.ws.sent.length;
          v.connection.typing();
          if (v.ws.sent.length > before) times.push(ms);
          v.clock.advance(250);
        }
        v.ws.drop();
        v.connection.typing();  // offline: nothing either
        return { times, sent: v.sent.map(([, f]) => f.type) };
        """,
    )
    assert seen["times"] == [0, TYPING_EVERY, 2 * TYPING_EVERY]
    assert seen["sent"] == ["start", "typing", "typing", "typing"]


async def test_answers_to_the_bot_are_kept_and_resent_like_messages(page: Page) -> None:
    # A button's option and a typed answer: `bot_reply` under a client_id, kept (in storage too)
    # until the ack, sent again after a reconnect or a reload under the same id; one refused
    # for good (invalid_reply) is dropped.
    seen = await run(
        page,
        """
        const v = W.started();
        const picked = v.connection.botReply({ option: "buy", label: "Buy something" });
        v.clock.advance(1);
        const typed = v.connection.botReply({ text: "vera@example.com" });
        v.clock.advance(1);
        const refused = v.connection.botReply({ option: "gone", label: "Gone" });
        const first = v.ws.sent.slice(1);
        v.ws.deliver({ type: "error", code: "invalid_reply", message: "no", client_id: refused });
        const stored = JSON.parse(v.storage.getItem("omni.webchat.7"));
        v.ws.drop();
        v.reconnect();
        v.ws.deliver(W.resumed("bot"));
        const resent = [...v.ws.sent];
        v.ws.deliver({ type: "ack", conversation_id: "C1", client_id: picked, seq: 3 });
        // A reload: the answer still on its way is remembered, with what to show meanwhile.
        const reloaded = W.visitor({ storage: v.storage });
        const remembered = reloaded.connection.unacknowledged;
        reloaded.connection.open();
        reloaded.ws.accept();
        reloaded.ws.deliver(W.resumed("bot"));
        return { ids: [picked, typed, refused], first, stored, resent, remembered,
                 again: [...reloaded.ws.sent] };
        """,
    )
    picked, typed, refused = seen["ids"]
    assert len(set(seen["ids"])) == 3
    assert seen["first"] == [
        {"type": "bot_reply", "client_id": picked, "option": "buy"},
        {"type": "bot_reply", "client_id": typed, "text": "vera@example.com"},
        {"type": "bot_reply", "client_id": refused, "option": "gone"},
    ]
    assert seen["stored"]["pending"] == [
        [picked, {"bot": {"option": "buy"}, "label": "Buy something"}],
        [typed, {"bot": {"text": "vera@example.com"}, "label": "vera@example.com"}],
    ]
    assert seen["resent"] == [
        {"type": "resume", "token": "tok-1", "last_seq": 0},
        {"type": "bot_reply", "client_id": picked, "option": "buy"},
        {"type": "bot_reply", "client_id": typed, "text": "vera@example.com"},
    ]
    assert seen["remembered"] == [
        [typed, {"bot": {"text": "vera@example.com"}, "label": "vera@example.com"}]
    ]
    assert seen["again"] == [
        {"type": "resume", "token": "tok-1", "last_seq": 0},
        {"type": "bot_reply", "client_id": typed, "text": "vera@example.com"},
    ]
