"""Locust load test for Omni, over real websockets (docs/capacity.md, loadtests/README.md).

Two user classes:

* ``OperatorUser`` (``fixed_count``, spawned before the visitors): connects to ``/ws/operator``,
  signs in with one token of the pool, goes ``available``, accepts every offer and answers each
  visitor message after a think time. A reader greenlet dispatches the frames of its conversations
  (up to its capacity at once). When a visitor asks for it, the operator ends the conversation.
* ``VisitorUser``: one conversation per iteration — connect, ``start``, wait in the queue until
  ``assigned``, exchange messages with think times, end (or let the operator end), answer or skip
  the survey, ``closed``, close the socket.

Request types reported to locust (each its own row in the tables and charts):

==============================  ==============================================================
``connect``                     websocket handshake (name: the endpoint, and its node when
                                there are several: ``/ws/visitor @ ws://127.0.0.1:PORT``)
``login``                       operator ``login`` → ``welcome``, then ``status available``
``start``                       visitor ``start`` → ``started``
``queue wait``                  ``started`` → ``assigned`` (name: the service)
``message visitor→operator``    visitor send → operator receives (end to end, via the text)
``message operator→visitor``    operator send → visitor receives (end to end, via the text)
``end``                         ``end`` → ``ended`` (name: who ended)
``survey``                      ``survey``/``survey_skip`` → ``closed``
``protocol error``              any ``error`` frame (name: its code) — always a failure
``connection lost``             a socket closed or failed outside any named step — a failure
``reconnect``                   a socket closed with ``moved`` (1012), or whose node is gone,
                                taken up again on the next node (name: ``moved`` or ``node
                                gone``): a visitor resumes its conversation, an operator signs
                                in again and syncs its conversations; a failure when it gave up
==============================  ==============================================================

Every wait has a timeout, and a timeout is a failure of the step it interrupts.

Parameters (command line, or the environment variable in brackets):

``--omni-services`` [OMNI_LOAD_SERVICES]          service ids, comma separated (default ``1,2``)
``--omni-operator-tokens`` [OMNI_LOAD_OPERATOR_TOKENS]
    operator tokens, comma separated; ``load-op-{1..50}-Kq7Zx2Lw9Rv4Tp8M`` expands to a range
    (the default, matching ``loadtests/omni-load.toml``)
``--omni-operators`` [OMNI_LOAD_OPERATORS]        operator users (default: one per token;
    ``smoke.py`` passes its ``--operators``)
``--omni-workers`` [OMNI_LOAD_WORKERS]            number of locust worker processes, so each
    worker takes a disjoint slice of the tokens (default 1)
``--omni-messages`` [OMNI_LOAD_MESSAGES]          visitor messages per conversation, ``min-max``
    (default ``2-4``)
``--omni-message-interval`` [OMNI_LOAD_MESSAGE_INTERVAL]
    visitor think time before each message, seconds ``min-max`` (default ``1-3``); with the
    operator's reply delay this sets the message rate
``--omni-reply-delay`` [OMNI_LOAD_REPLY_DELAY]    operator think time before replying (``0.5-2``)
``--omni-queue-timeout`` [OMNI_LOAD_QUEUE_TIMEOUT]  longest queue wait, seconds (default 120)
``--omni-timeout`` [OMNI_LOAD_TIMEOUT]            any other wait, seconds (default 20)
``--omni-nodes`` [OMNI_LOAD_NODES]                the nodes of a cluster (docs/scale-out.md),
    ``ws://127.0.0.1:P1,ws://127.0.0.1:P2,...``; replaces ``--host``, which names one node
``--omni-reconnects`` [OMNI_LOAD_RECONNECTS]      attempts to take a socket up again on another
    node (default 6, all within ``--omni-timeout`` seconds)

Several nodes: each user picks its node round robin (one counter for operators and visitors,
offset by the worker's index), so consecutive users — operators and visitors alike — land on
different nodes. A socket closed with ``moved`` (1012), or — with several nodes — whose node is
gone (the connection dropped, refused, or closed with 1001 ``server_shutdown``), is taken up on
the next node: at most ``--omni-reconnects`` attempts within ``--omni-timeout`` seconds, with a
back-off of 0.25 s doubling to 2 s. A visitor resumes with its token and the last ``seq`` it saw,
reads the replay, and sends again what the server had not confirmed (messages by ``client_id``,
which makes them idempotent; ``end``, the survey); an operator signs in again on the next node
and sends ``sync`` for each conversation of its ``welcome``. Replies carry a ``client_id`` made
from the visitor's message, so a reply sent twice is stored once. With one node, a lost socket
is a failure (``connection lost``), as it always was; only ``moved`` is taken up again.

Load profile: ``OMNI_LOAD_PROFILE`` = ``steady`` | ``morning-ramp`` | ``burst`` selects a
``LoadTestShape`` from ``shapes.py`` (then ``-u``/``-r`` are ignored); unset, ``-u``/``-r`` apply.

Safety: the host, and every node, must be loopback (``ws://127.0.0.1:PORT``, ``localhost``,
``::1``) unless ``OMNI_LOAD_ALLOW_REMOTE=1`` is set — never point this at a server you do not own.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.lock
import gevent.pool
import websocket  # websocket-client
from locust import User, between, constant, events, task
from locust.exception import StopUser

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

log = logging.getLogger("omni.load")

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: The operators' tokens of ``loadtests/omni-load.toml`` (public: for load tests only).
TOKENS = "load-op-{1..50}-Kq7Zx2Lw9Rv4Tp8M"

# ── parameters ────────────────────────────────────────────────────────────────────────────────


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("Omni")

    def add(name: str, env: str, default: str, help: str) -> None:
        group.add_argument(name, type=str, env_var=env, default=default, help=help)

    add("--omni-services", "OMNI_LOAD_SERVICES", "1,2", "service ids, comma separated")
    add(
        "--omni-operator-tokens",
        "OMNI_LOAD_OPERATOR_TOKENS",
        TOKENS,
        "operator tokens, comma separated; PREFIX{A..B} expands to a range",
    )
    add("--omni-operators", "OMNI_LOAD_OPERATORS", "", "operator users (default: one per token)")
    add("--omni-workers", "OMNI_LOAD_WORKERS", "1", "worker processes sharing the tokens")
    add("--omni-messages", "OMNI_LOAD_MESSAGES", "2-4", "visitor messages per conversation")
    add("--omni-message-interval", "OMNI_LOAD_MESSAGE_INTERVAL", "1-3", "visitor think time, s")
    add("--omni-reply-delay", "OMNI_LOAD_REPLY_DELAY", "0.5-2", "operator think time, s")
    add("--omni-queue-timeout", "OMNI_LOAD_QUEUE_TIMEOUT", "120", "longest queue wait, s")
    add("--omni-timeout", "OMNI_LOAD_TIMEOUT", "20", "any other wait, s")
    add(
        "--omni-nodes",
        "OMNI_LOAD_NODES",
        "",
        "several nodes, ws://127.0.0.1:P1,ws://127.0.0.1:P2,... (instead of --host)",
    )
    add("--omni-reconnects", "OMNI_LOAD_RECONNECTS", "6", "attempts to resume on another node")


def expand_tokens(spec: str) -> list[str]:
    """``"a,b,load-op-{1..3}"`` → ``["a", "b", "load-op-1", "load-op-2", "load-op-3"]``."""
    tokens: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(.*)\{(\d+)\.\.(\d+)\}(.*)", part)
        if m:
            tokens += [f"{m[1]}{n}{m[4]}" for n in range(int(m[2]), int(m[3]) + 1)]
        else:
            tokens.append(part)
    return tokens


def parse_range(spec: str) -> tuple[float, float]:
    low, _, high = spec.partition("-")
    return float(low), float(high or low)


class Settings:
    services: list[int] = [1, 2]
    tokens: list[str] = expand_tokens(TOKENS)
    workers = 1
    messages = (2.0, 4.0)
    message_interval = (1.0, 3.0)
    reply_delay = (0.5, 2.0)
    queue_timeout = 120.0
    timeout = 20.0
    #: The nodes' websocket base URLs (checked: loopback); empty: the user's ``host``.
    nodes: list[str] = []
    reconnects = 6

    @classmethod
    def load(cls, options: Any) -> None:
        cls.services = [int(s) for s in options.omni_services.split(",") if s.strip()]
        cls.tokens = expand_tokens(options.omni_operator_tokens)
        cls.workers = max(1, int(options.omni_workers))
        cls.messages = parse_range(options.omni_messages)
        cls.message_interval = parse_range(options.omni_message_interval)
        cls.reply_delay = parse_range(options.omni_reply_delay)
        cls.queue_timeout = float(options.omni_queue_timeout)
        cls.timeout = float(options.omni_timeout)
        cls.nodes = [check_host(n) for n in options.omni_nodes.split(",") if n.strip()]
        cls.reconnects = max(0, min(100, int(options.omni_reconnects)))


def check_host(host: str | None) -> str:
    """The websocket base URL (``ws://host:port``); refuses anything but loopback unless
    ``OMNI_LOAD_ALLOW_REMOTE=1``."""
    if not host:
        raise SystemExit("omni load: --host is required, e.g. --host ws://127.0.0.1:8765")
    parts = urlsplit(host if "://" in host else f"ws://{host}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise SystemExit(f"omni load: bad host {host!r}; expected ws://HOST:PORT")
    if parts.hostname not in LOOPBACK and os.environ.get("OMNI_LOAD_ALLOW_REMOTE") != "1":
        raise SystemExit(
            f"omni load: refusing non-loopback host {parts.hostname!r}; "
            "set OMNI_LOAD_ALLOW_REMOTE=1 to load a server you own"
        )
    return f"{scheme}://{parts.netloc}"


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    options = environment.parsed_options
    if options is None:  # library use without the command line: keep the defaults
        return
    Settings.load(options)
    if environment.host:
        check_host(environment.host)
    if not Settings.nodes and environment.host:
        Settings.nodes = [check_host(environment.host)]
    if Settings.nodes and not environment.host:
        environment.host = Settings.nodes[0]  # locust shows it; the users use Settings.nodes
    if options.omni_operators:
        OperatorUser.fixed_count = int(options.omni_operators)
    else:
        OperatorUser.fixed_count = len(Settings.tokens)


# ── reporting ─────────────────────────────────────────────────────────────────────────────────


class ProtocolError(Exception):
    """The server sent an ``error`` frame (already reported as ``protocol error``)."""


class StepTimeout(Exception):
    pass


class Moved(websocket.WebSocketConnectionClosedException):
    """The server said ``moved`` (its ``error`` frame, or close code 1012): the client takes the
    socket up again on a node (cluster mode, docs/scale-out.md). Not a failure by itself."""


class Closed(websocket.WebSocketConnectionClosedException):
    """The server closed the socket with a close frame (``code``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed ({code} {reason})".rstrip())
        self.code = code


def resumable(exc: BaseException) -> str | None:
    """Why a lost socket may be taken up on another node — ``"moved"``, or ``"node gone"`` when
    there are several nodes (dropped, refused, reset, or closed with 1001 ``server_shutdown``) —
    or None: a failure, as with one node."""
    if isinstance(exc, Moved):
        return "moved"
    if len(Settings.nodes) <= 1:
        return None
    if isinstance(exc, Closed):
        return "node gone" if exc.code == 1001 else None
    if isinstance(exc, (websocket.WebSocketConnectionClosedException, ConnectionError)):
        return "node gone"
    return None


def report(
    environment: Any,
    request_type: str,
    name: str,
    started: float,
    length: int = 0,
    exception: BaseException | None = None,
    response_time: float | None = None,
) -> None:
    """Report one step to locust; ``started`` is a ``time.perf_counter()`` reading, or
    ``response_time`` (ms) is given directly."""
    if response_time is None:
        response_time = (time.perf_counter() - started) * 1000
    if exception is not None:
        try:
            exception.omni_reported = True  # type: ignore[attr-defined]
        except AttributeError:
            pass
    environment.events.request.fire(
        request_type=request_type,
        name=name,
        response_time=response_time,
        response_length=length,
        exception=exception,
        context={},
    )


def stamp(tag: str) -> str:
    """Message text that carries its send time (wall clock, for the other side's latency)."""
    return f"load {tag} t={time.time():.6f}"


def stamped_latency_ms(text: str) -> float | None:
    m = re.search(r" t=(\d+\.\d+)", text)
    return max(0.0, (time.time() - float(m[1])) * 1000) if m else None


# ── a websocket connection ────────────────────────────────────────────────────────────────────


class Connection:
    """One websocket: JSON frames, a send lock (several greenlets send), a reader with timeouts."""

    def __init__(self, environment: Any, url: str, name: str) -> None:
        self.environment = environment
        self.name = name
        self.lock = gevent.lock.BoundedSemaphore()
        if len(Settings.nodes) > 1:  # which node: a row per node in the tables
            name = f"{name} @ {url.rsplit('/ws/', 1)[0]}"
        started = time.perf_counter()
        try:
            self.ws = open_socket(url, Settings.timeout)
        except Exception as exc:
            report(environment, "connect", name, started, exception=exc)
            raise
        report(environment, "connect", name, started)

    def send(self, type: str, **fields: Any) -> None:
        data = json.dumps({"type": type, **fields})
        with self.lock:
            self.ws.send(data)

    def recv(self, timeout: float) -> dict[str, Any]:
        """The next frame; an ``error`` frame is reported and raised as ``ProtocolError``."""
        self.ws.settimeout(timeout)
        try:
            opcode, raw = self.ws.recv_data()
        except websocket.WebSocketTimeoutException as exc:
            raise StepTimeout(f"no frame within {timeout:.0f}s") from exc
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(raw[:2], "big") if len(raw) >= 2 else 1005
            reason = raw[2:].decode(errors="replace")
            if code == 1012:
                raise Moved(f"closed 1012 {reason}")
            raise Closed(code, reason)
        if not raw:
            raise websocket.WebSocketConnectionClosedException("connection closed")
        frame: dict[str, Any] = json.loads(raw)
        error = frame.get("code") if frame.get("type") == "error" else None
        if error == "moved":
            raise Moved(f"moved: {frame.get('message')}")  # the close (1012) follows
        if error == "server_shutdown" and len(Settings.nodes) > 1:
            # The node stops (the close, 1001, follows): the socket goes on elsewhere.
            raise Closed(1001, f"server_shutdown: {frame.get('message')}")
        if frame.get("type") == "error":
            report(
                self.environment,
                "protocol error",
                str(frame.get("code")),
                time.perf_counter(),
                exception=ProtocolError(f"{frame.get('code')}: {frame.get('message')}"),
            )
            raise ProtocolError(f"{frame.get('code')}: {frame.get('message')}")
        return frame

    def expect(self, *types: str, timeout: float) -> dict[str, Any]:
        """Skip frames until one of ``types`` arrives, within ``timeout`` seconds overall."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepTimeout(f"no {'/'.join(types)} within {timeout:.0f}s")
            frame = self.recv(left)
            if frame.get("type") in types:
                return frame

    def close(self) -> None:
        """A close handshake of at most a second, then the socket is shut in any case."""
        try:
            with gevent.Timeout(2, False):
                self.ws.close(timeout=1)
        except Exception:
            pass
        finally:
            try:
                self.ws.shutdown()
            except Exception:
                pass


def open_socket(url: str, timeout: float) -> websocket.WebSocket:
    # A program, not a browser page: no Origin header (the load configuration lets native
    # clients in; websocket-client would otherwise make one up from the URL).
    return websocket.create_connection(
        url, timeout=timeout, enable_multithread=False, suppress_origin=True
    )


#: A visitor's replay after ``resume`` that pauses this long (seconds) is taken as complete.
REPLAY_QUIET = 1.0

# ── nodes ─────────────────────────────────────────────────────────────────────────────────────

_node_counter = itertools.count()


def first_node(user: User) -> int:
    """The user's node (an index into ``Settings.nodes``, taken modulo their number): round
    robin over every user of this process, offset by the worker's index so that the workers of
    a distributed run do not all start on the first node."""
    worker = max(0, getattr(user.environment.runner, "worker_index", 0) or 0)
    return worker + next(_node_counter)


def node_url(user: Any) -> str:
    """The websocket base URL of the node ``user`` is on now."""
    nodes = Settings.nodes or [check_host(user.host or user.environment.host)]
    return nodes[user.node % len(nodes)]


class Resumable(Connection):
    """A visitor's connection that outlives its node: closed with ``moved`` (1012), or — with
    several nodes — its node gone, it connects to the next node (``user.node`` moves on) and
    resumes the conversation with its token and the last ``seq`` seen; the replay is handed to
    the reader as if it had come live, then what the server had not confirmed is sent again.

    Bounded: at most ``Settings.reconnects`` attempts per loss, all within ``Settings.timeout``
    seconds, and at most ``Settings.reconnects`` losses taken up in one ``recv``."""

    def __init__(self, user: Any, path: str) -> None:
        self.user = user
        self.path = path
        self.token: str | None = None
        self.last_seq = 0
        #: Sent and not yet confirmed, in sending order: "start", "message <client_id>", "end",
        #: "survey" → the frame.
        self.outstanding: dict[str, dict[str, Any]] = {}
        self.replayed: deque[dict[str, Any]] = deque()
        super().__init__(user.environment, node_url(user) + path, path)

    def send(self, type: str, **fields: Any) -> None:
        key = {"start": "start", "end": "end", "survey": "survey", "survey_skip": "survey"}.get(
            type, f"message {fields.get('client_id')}" if type == "message" else None
        )
        if key is not None:
            self.outstanding[key] = {"type": type, **fields}
        try:
            super().send(type, **fields)
        except (websocket.WebSocketException, OSError) as exc:
            if key is None or resumable(exc) is None:
                raise
            # Kept in ``outstanding``: the next recv notices the loss, resumes, sends it again.

    def recv(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for _ in range(Settings.reconnects + 1):
            if self.replayed:
                return self.replayed.popleft()
            left = deadline - time.monotonic()
            if left <= 0:
                raise StepTimeout(f"no frame within {timeout:.0f}s")
            try:
                frame = super().recv(left)
            except (websocket.WebSocketException, OSError) as exc:
                why = resumable(exc)
                if why is None or getattr(exc, "omni_reported", False):
                    raise
                self._resume(why, exc)
                continue
            self._track(frame)
            return frame
        raise StepTimeout(f"the socket was lost {Settings.reconnects + 1} times in one wait")

    def _track(self, frame: dict[str, Any]) -> None:
        seq = frame.get("seq")
        if isinstance(seq, int) and seq > self.last_seq:
            self.last_seq = seq
        kind = frame.get("type")
        if kind == "started":
            self.token = frame.get("token")
            self.outstanding.pop("start", None)
        elif kind == "ack":
            self.outstanding.pop(f"message {frame.get('client_id')}", None)
        elif kind == "ended":
            self.outstanding.pop("end", None)
        elif kind == "closed":
            self.outstanding.clear()

    def _shut(self) -> None:
        try:
            self.ws.shutdown()
        except Exception:
            pass

    def _resume(self, why: str, lost: BaseException) -> None:
        started = time.perf_counter()
        deadline = time.monotonic() + Settings.timeout
        failure: BaseException = lost
        for attempt in range(Settings.reconnects):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.user.node += 1
            self._shut()
            try:
                self.ws = open_socket(node_url(self.user) + self.path, left)
                if self.token is not None:  # else nothing was stored: "start" goes again
                    self._replay(deadline)
                for frame in list(self.outstanding.values()):
                    Connection.send(self, **frame)
            except ProtocolError as exc:  # reported (invalid_token, ...): no second try
                failure = exc
                break
            except (StepTimeout, websocket.WebSocketException, OSError) as exc:
                failure = exc
                gevent.sleep(max(0.0, min(0.25 * 2**attempt, 2.0, deadline - time.monotonic())))
                continue
            report(self.environment, "reconnect", why, started)
            return
        report(self.environment, "reconnect", why, started, exception=failure)
        raise failure

    def _replay(self, deadline: float) -> None:
        """``resume``, then the replay up to the conversation's last ``seq`` (into
        ``replayed``, for the reader), so that what it confirms is not sent again. A replay that
        pauses for :data:`REPLAY_QUIET` seconds short of that ``seq`` is taken as complete (an
        event the visitor never sees is not replayed to them)."""
        Connection.send(self, "resume", token=self.token, last_seq=self.last_seq)
        while True:
            frame = Connection.recv(self, max(0.001, deadline - time.monotonic()))
            if frame.get("type") == "resumed":
                break
        target = int(frame.get("last_seq") or 0)
        while self.last_seq < target:
            left = deadline - time.monotonic()
            try:
                frame = Connection.recv(self, max(0.001, min(REPLAY_QUIET, left)))
            except StepTimeout:
                if left <= REPLAY_QUIET:
                    raise
                break
            self._track(frame)
            self.replayed.append(frame)


# ── visitor ───────────────────────────────────────────────────────────────────────────────────


class VisitorUser(User):
    """One conversation per iteration, then a pause before the next visitor."""

    weight = 1
    wait_time = between(1, 3)
    node = 0

    def on_start(self) -> None:
        self.node = first_node(self)

    @task
    def conversation(self) -> None:
        env = self.environment
        service = random.choice(Settings.services)
        me = f"v-{uuid.uuid4().hex[:10]}"
        try:
            conn = Resumable(self, "/ws/visitor")
        except (websocket.WebSocketException, OSError):
            self.node += 1  # reported as a failed connect; the next conversation tries the next
            return
        try:
            self._converse(conn, service, me)
        except (ProtocolError, StepTimeout, websocket.WebSocketException, OSError) as exc:
            # Reported by the step it interrupted; a connection lost between steps is reported
            # here, so that no failure goes uncounted.
            if not getattr(exc, "omni_reported", False) and not isinstance(exc, ProtocolError):
                report(env, "connection lost", "/ws/visitor", time.perf_counter(), exception=exc)
        finally:
            conn.close()

    def _converse(self, conn: Resumable, service: int, me: str) -> None:
        env = self.environment
        t = time.perf_counter()
        conn.send("start", service_id=service, visitor={"name": me, "fields": {"load": "1"}})
        try:
            conn.expect("started", timeout=Settings.timeout)
        except Exception as exc:
            report(env, "start", f"service {service}", t, exception=exc)
            raise
        report(env, "start", f"service {service}", t)

        # queue wait: started → assigned
        t = time.perf_counter()
        try:
            conn.expect("assigned", timeout=Settings.queue_timeout)
        except Exception as exc:
            report(env, "queue wait", f"service {service}", t, exception=exc)
            if isinstance(exc, StepTimeout):
                conn.send("end")  # leave the queue (abandoned) rather than linger
            raise
        report(env, "queue wait", f"service {service}", t)

        count = random.randint(int(Settings.messages[0]), int(Settings.messages[1]))
        operator_ends = random.random() < 0.5
        for n in range(1, count + 1):
            gevent.sleep(random.uniform(*Settings.message_interval))
            last = n == count
            tag = f"{me}#{n}" + (" last" if last else "")
            tag += " op-end" if last and operator_ends else ""
            conn.send("message", client_id=f"{me}-{n}", text=stamp(tag))
            # the operator's reply to this message (skip acks, typing, the greeting)
            t = time.perf_counter()
            deadline = time.monotonic() + Settings.timeout + Settings.reply_delay[1]
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    exc = StepTimeout(f"no reply to message {n} within {Settings.timeout:.0f}s")
                    report(env, "message operator→visitor", "reply", t, exception=exc)
                    raise exc
                try:
                    frame = conn.recv(left)
                except StepTimeout as exc:
                    report(env, "message operator→visitor", "reply", t, exception=exc)
                    raise
                if (
                    frame.get("type") == "message"
                    and frame.get("author", {}).get("kind") == "operator"
                    and f"re {me}#{n} " in frame.get("text", "")
                ):
                    latency = stamped_latency_ms(frame["text"])
                    report(
                        env,
                        "message operator→visitor",
                        "reply",
                        t,
                        length=len(frame["text"]),
                        response_time=latency,
                    )
                    break

        t = time.perf_counter()
        who = "by operator" if operator_ends else "by visitor"
        try:
            if not operator_ends:
                conn.send("end")
            ended = conn.expect("ended", timeout=Settings.timeout)
            if ended.get("by") != ("operator" if operator_ends else "visitor"):
                raise ProtocolError(f"ended by {ended.get('by')!r}")
        except Exception as exc:
            report(env, "end", who, t, exception=exc)
            raise
        report(env, "end", who, t)

        t = time.perf_counter()
        try:
            frame = conn.expect("survey", "closed", timeout=Settings.timeout)
        except Exception as exc:
            report(env, "survey", "wait", t, exception=exc)
            raise
        if frame["type"] == "survey":
            answer = random.random() < 0.5
            name = "answer" if answer else "skip"
            try:
                if answer:
                    conn.send("survey", answers={"rating": random.randint(1, 5), "comment": "ok"})
                else:
                    conn.send("survey_skip")
                conn.expect("closed", timeout=Settings.timeout)
            except Exception as exc:
                report(env, "survey", name, t, exception=exc)
                raise
            report(env, "survey", name, t)


# ── operator ──────────────────────────────────────────────────────────────────────────────────

_token_counter = itertools.count()


class OperatorUser(User):
    """One signed-in operator for the whole run: a reader greenlet dispatches frames per
    conversation, and each reply runs in its own greenlet after a think time."""

    fixed_count = 50  # set from the tokens / --omni-operators at init; spawned before visitors
    wait_time = constant(1)
    conn: Connection | None = None
    reader: gevent.Greenlet | None = None
    replies: gevent.pool.Group | None = None
    stopping = False
    node = 0

    def on_start(self) -> None:
        runner = self.environment.runner
        worker = max(0, getattr(runner, "worker_index", 0) or 0)
        index = worker + Settings.workers * next(_token_counter)
        if index >= len(Settings.tokens):
            report(
                self.environment,
                "login",
                "/ws/operator",
                time.perf_counter(),
                exception=RuntimeError(f"no operator token left (user {index})"),
            )
            raise StopUser()
        self.token = Settings.tokens[index]
        self.node = first_node(self)
        self.stopping = False
        self.conn = None
        self.reader = None
        self.held: set[str] = set()
        #: The highest seq seen per conversation: replays skip what was seen, ``sync`` asks after.
        self.seqs: dict[str, int] = {}
        #: Why the last socket was lost, when it is taken up on the next node; its time.
        self.lost: tuple[str, float] | None = None
        self.replies = gevent.pool.Group()
        self._sign_in()

    def _sign_in(self) -> None:
        env = self.environment
        try:
            self.conn = Connection(env, node_url(self) + "/ws/operator", "/ws/operator")
        except (websocket.WebSocketException, OSError):
            # Reported as a failed connect; the task retries in a second, on the next node.
            self.conn = None
            self.node += 1 if len(Settings.nodes) > 1 else 0
            return
        t = time.perf_counter()
        try:
            self.conn.send("login", token=self.token)
            welcome = self.conn.expect("welcome", timeout=Settings.timeout)
            self.conn.send("status", status="available")
            self.conn.expect("status", timeout=Settings.timeout)
        except Exception as exc:
            why = resumable(exc)
            if why is None:
                report(env, "login", "/ws/operator", t, exception=exc)
            elif self.lost is None:
                self.lost = (why, t)  # the next second's sign-in takes it up on the next node
            self.conn.close()
            self.conn = None
            self.node += 1 if why is not None else 0
            return
        report(env, "login", "/ws/operator", t)
        if self.lost is not None:
            report(env, "reconnect", self.lost[0], self.lost[1])
            self.lost = None
        self.held = {c["id"] for c in welcome.get("conversations", []) if "id" in c}
        self.reader = gevent.spawn(self._read, self.conn)
        for cid in sorted(self.held):  # what happened while away is not pushed: ask for it
            self.conn.send("sync", conversation_id=cid, last_seq=self.seqs.get(cid, 0))

    @task
    def keep_signed_in(self) -> None:
        """The reader does the work; this only signs in again if the connection was lost (on
        the next node, if it was lost to ``moved`` or to its node going away)."""
        if self.conn is None or self.reader is None or self.reader.dead:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            if self.lost is not None and time.perf_counter() - self.lost[1] > Settings.timeout:
                exc = StepTimeout(f"not signed in again within {Settings.timeout:.0f}s")
                report(self.environment, "reconnect", self.lost[0], self.lost[1], exception=exc)
                self.lost = None  # given up: reported; the sign-ins go on as after any failure
            self._sign_in()

    def on_stop(self) -> None:
        self.stopping = True
        if self.reader is not None:
            self.reader.kill(block=True, timeout=2)  # not reading while the socket closes
        if self.replies is not None:
            self.replies.kill(block=True, timeout=2)
        if self.conn is not None:
            self.conn.close()

    def _read(self, conn: Connection) -> None:
        env = self.environment
        while True:
            try:
                frame = conn.recv(timeout=3600)
            except ProtocolError:
                continue  # reported; the connection stays open unless the server closes it
            except StepTimeout:
                continue
            except (websocket.WebSocketException, OSError) as exc:
                if self.stopping:
                    return
                why = resumable(exc)
                if why is None:
                    report(
                        env, "connection lost", "/ws/operator", time.perf_counter(), exception=exc
                    )
                else:
                    self.lost = (why, time.perf_counter())
                    self.node += 1
                return
            kind = frame.get("type")
            cid = frame.get("conversation_id")
            seq = frame.get("seq")
            if isinstance(seq, int) and cid is not None:
                if seq <= self.seqs.get(cid, 0) and kind == "message":
                    continue  # seen already (a replay overlapping what came live)
                self.seqs[cid] = max(seq, self.seqs.get(cid, 0))
            if kind == "offer":
                conn.send("accept", conversation_id=cid)
            elif kind == "assigned":
                self.held.add(cid)
            elif kind == "message" and frame.get("author", {}).get("kind") == "visitor":
                text = frame.get("text", "")
                latency = stamped_latency_ms(text)
                if latency is None:
                    continue  # replayed history, or not ours
                report(
                    env,
                    "message visitor→operator",
                    "message",
                    0,
                    length=len(text),
                    response_time=latency,
                )
                m = re.match(r"load (\S+)", text)
                tag = m[1] if m else "?"
                self.replies.spawn(self._reply, cid, tag, " op-end" in text)
            elif kind in ("ended", "closed"):
                self.held.discard(cid)

    def _reply(self, cid: str, tag: str, then_end: bool) -> None:
        gevent.sleep(random.uniform(*Settings.reply_delay))
        # The client_id follows from the visitor's message: sent again (after a reconnect, or a
        # replay answered twice), the reply is stored once.
        sent = self._send(
            "message", conversation_id=cid, client_id=f"re-{tag}", text=stamp(f"re {tag}")
        )
        if sent and then_end:
            self._send("end", conversation_id=cid)

    def _send(self, type: str, **fields: Any) -> bool:
        """Send on the current connection. When it was lost to ``moved`` or to its node going
        away, wait for the sign-in on the next node (at most ``Settings.timeout`` seconds) and
        send there; any other loss is a failure (``connection lost``)."""
        deadline = time.monotonic() + Settings.timeout
        error: BaseException | None = None
        while not self.stopping:
            conn, reader = self.conn, self.reader
            if conn is not None and reader is not None and not reader.dead:
                try:
                    conn.send(type, **fields)
                    return True
                except (websocket.WebSocketException, OSError) as exc:
                    error = exc
                    if resumable(exc) is None:
                        break
            elif self.lost is None:
                error = error or websocket.WebSocketConnectionClosedException("not signed in")
                break
            if time.monotonic() >= deadline:
                error = StepTimeout(f"not signed in again within {Settings.timeout:.0f}s")
                break
            gevent.sleep(0.2)
        if not self.stopping:
            report(
                self.environment,
                "connection lost",
                "/ws/operator",
                time.perf_counter(),
                exception=error,
            )
        return False


# ── summary ───────────────────────────────────────────────────────────────────────────────────


_environment: list[Any] = []


@events.init.add_listener
def _remember_environment(environment: Any, **_: Any) -> None:
    _environment[:] = [environment]


@events.quit.add_listener
def _write_summary(**_: Any) -> None:
    """``OMNI_LOAD_SUMMARY=FILE``: the final per-request-type figures as JSON (all names of a
    type merged), written when locust quits, after its users stopped — on the master in a
    distributed run."""
    path = os.environ.get("OMNI_LOAD_SUMMARY")
    if not path or not _environment:
        return
    environment = _environment[0]
    runner = environment.runner
    if not path or runner is None or type(runner).__name__ == "WorkerRunner":
        return
    from locust.stats import StatsEntry

    merged: dict[str, StatsEntry] = {}
    for (_name, method), entry in runner.stats.entries.items():
        total = merged.setdefault(method, StatsEntry(runner.stats, method, method))
        total.extend(entry)
    summary = {
        method: {
            "count": e.num_requests,
            "failures": e.num_failures,
            "p50": e.get_response_time_percentile(0.5) if e.num_requests else 0,
            "p99": e.get_response_time_percentile(0.99) if e.num_requests else 0,
            "max": e.max_response_time if e.num_requests else 0,
            "rps": e.total_rps,
        }
        for method, e in sorted(merged.items())
    }
    nodes: dict[str, dict[str, int]] = {}
    for (name, method), entry in runner.stats.entries.items():
        if method == "connect" and " @ " in name:  # several nodes: connects per node
            node = nodes.setdefault(name.split(" @ ", 1)[1], {"connects": 0, "failures": 0})
            node["connects"] += entry.num_requests
            node["failures"] += entry.num_failures
    if nodes:
        summary["_nodes"] = dict(sorted(nodes.items()))
    summary["_total"] = {
        "count": runner.stats.total.num_requests,
        "failures": runner.stats.total.num_failures,
        "errors": len(runner.errors),
        "exceptions": len(runner.exceptions),
        "users": runner.user_count,
        "run_time": time.time() - runner.stats.total.start_time,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)


# ── load profile ──────────────────────────────────────────────────────────────────────────────

_PROFILE = os.environ.get("OMNI_LOAD_PROFILE", "").strip()
if _PROFILE:
    from shapes import PROFILES

    if _PROFILE not in PROFILES:
        raise SystemExit(f"omni load: OMNI_LOAD_PROFILE must be one of {', '.join(PROFILES)}")
    LoadShape = PROFILES[_PROFILE]
