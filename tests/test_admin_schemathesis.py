"""Schemathesis against the admin API as served: a real server on 127.0.0.1 (ephemeral ports)
in a thread of its own — on the memory store, and on PostgreSQL as ``omni serve`` runs it —
its ``/openapi.json`` loaded over HTTP, every operation fuzzed with positive and negative data
under an admin bearer token.

What must hold for every generated request: no 5xx (``not_a_server_error``), and the response
matches what the document says about it (``response_schema_conformance``).

The server runs in its own ``trio.run`` in a background thread (schemathesis and hypothesis are
synchronous; these tests are plain sync tests). It holds live conversations in several states —
active, closed, queued, out of hours — with the operator Alice signed in, so the conversation
endpoints have something real to return and resume can succeed.

Order independence: after every POST, PUT or DELETE (a successful one may have deleted a group,
a service or the test's own admin token), the configuration is put back to the baseline
straight through the server's ``Configuration`` (in its trio thread), so every generated request
meets the same configuration whatever ran before it, and no earlier deletion can turn later
requests into 404s or 401s that would hide a 5xx. Operations run read-only first, then writes,
deletions last.

Each operation also gets explicit examples of valid inputs that a few random examples rarely
reach (``_edge_cases``): date-times at the ends of the range, a NUL character in strings.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, example, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from admin_api.app import create_app
from admin_api.openapi import document
from omni.config import RESOURCES
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store import Store
from omni.store.memory import MemoryStore
from omni.store.postgres import open_postgres_store
from tests.conftest import fresh_database
from tests.support import TOK_ALICE, api_token, connect_tcp, login, make_config, start, with_items

ADMIN_TOKEN = "admin-secret-token-Rk6Lx1Vp9Nq"
MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance]
#: Dependency order: a resource only refers to kinds before it.
#: Webhooks too: one a generated request created must not outlive it (a later request could
#: make an event, and its delivery go to whatever public address was generated).
KINDS = ("schedules", "groups", "services", "operators", "parameters", "api_tokens", "webhooks")


def _documented_operations() -> list[tuple[str, str, bool]]:
    """(METHOD, path, has inputs) of every operation, from the same declarations the server
    serves (the routes only touch the hub and the configuration when a request comes, so none
    is needed here). Read-only operations first, then writes, deletions last."""
    app = create_app(None, CollectorRegistry(), object(), uploads=object())  # type: ignore[arg-type]
    doc = document(app.extensions["omni_api"].routes)
    rank = {"get": 0, "post": 1, "put": 2, "delete": 3}
    operations = [
        (m.upper(), p, bool(op.get("parameters") or op.get("requestBody")))
        for p, methods in doc["paths"].items()
        for m, op in methods.items()
    ]
    return sorted(operations, key=lambda op: rank[op[0].lower()])


OPERATIONS = _documented_operations()
#: Negative data needs something to negate: operations without parameters or body have none.
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_inputs in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_inputs or mode is GenerationMode.POSITIVE
]


@dataclass
class LiveServer:
    server: RunningServer
    token: trio.lowlevel.TrioToken
    stop: trio.Event
    baseline: dict[tuple[str, str], dict[str, Any]]
    conversations: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.server.http_url

    def restore_configuration(self) -> None:
        """Put the configuration back to the baseline, in the server's own trio thread."""
        trio.from_thread.run(self._restore, trio_token=self.token)

    async def _restore(self) -> None:
        config = self.server.configuration
        for kind in KINDS:  # restore (or re-create) what the baseline has, referents first
            for (k, key), body in self.baseline.items():
                if k == kind and config.get(kind, key) != body:
                    await config.put(kind, key, body, "test:restore")
        for kind in reversed(KINDS):  # then drop what was added, referrers first
            for key in _keys(config, kind):
                if (kind, key) not in self.baseline:
                    await config.delete(kind, key, "test:restore")
        assert _snapshot(config) == self.baseline


def _keys(config: Any, kind: str) -> list[str]:
    key_field = RESOURCES[kind].key_field
    return ["default" if key_field is None else str(body[key_field]) for body in config.list(kind)]


def _snapshot(config: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(kind, key): config.get(kind, key) for kind in KINDS for key in _keys(config, kind)}


async def _serve(box: dict[str, Any], ready: threading.Event, database_url: str | None) -> None:
    config = make_config()
    config = with_items(config, api_token("root", ADMIN_TOKEN))
    stop = trio.Event()
    async with AsyncExitStack() as stack:
        store: Store = (
            MemoryStore()
            if database_url is None
            else await stack.enter_async_context(open_postgres_store(database_url))
        )
        server = await stack.enter_async_context(
            open_server(
                config,
                store=store,
                entropy=SeededEntropy(11),
                host="127.0.0.1",
                ws_port=0,
                http_port=0,
            )
        )
        ws = server.ws_url
        async with (
            connect_tcp(f"{ws}/ws/operator") as alice,
            connect_tcp(f"{ws}/ws/visitor") as v_active,
            connect_tcp(f"{ws}/ws/visitor") as v_closed,
            connect_tcp(f"{ws}/ws/visitor") as v_queued,
            connect_tcp(f"{ws}/ws/visitor") as v_ooh,
        ):
            await login(alice, TOK_ALICE)
            ids: dict[str, str] = {}
            # active: service 25 (group 1), answered by Alice, one message each way
            ids["active"] = (await start(v_active, 25, "Vera"))["conversation_id"]
            await alice.expect("offer")
            await alice.send("accept", conversation_id=ids["active"])
            await v_active.until("assigned")
            await v_active.send("message", client_id="v-1", text="Hello")
            await v_active.until("ack")
            # closed: service 27 (group 2, no survey), answered and ended by Alice
            ids["closed"] = (await start(v_closed, 27, "Wanda"))["conversation_id"]
            await alice.until("offer")
            await alice.send("accept", conversation_id=ids["closed"])
            await v_closed.until("assigned")
            await alice.send("end", conversation_id=ids["closed"])
            await v_closed.until("closed")
            # queued: Alice pauses, so the next visitor of service 25 waits
            await alice.send("status", status="paused")
            await alice.until("status")
            ids["queued"] = (await start(v_queued, 25, "Xavier"))["conversation_id"]
            await v_queued.expect("queued", position=1)
            # out of hours: service 26 is never open
            ids["out_of_hours"] = (await start(v_ooh, 26, "Yara"))["conversation_id"]
            await v_ooh.expect("out_of_hours")

            config_now = server.configuration
            box["live"] = LiveServer(
                server=server,
                token=trio.lowlevel.current_trio_token(),
                stop=stop,
                baseline=_snapshot(config_now),
                conversations=ids,
            )
            ready.set()
            await stop.wait()


def _fresh_database(postgres_url: str) -> str:
    """A new, empty database on the session's PostgreSQL server; its URL."""
    return fresh_database(postgres_url, f"omni_schemathesis_{os.getpid()}")


@pytest.fixture(
    scope="module",
    params=["memory", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def live(request: pytest.FixtureRequest) -> Iterator[LiveServer]:
    """The server, on the memory store and on PostgreSQL (the store ``omni serve`` uses)."""
    database_url = None
    if request.param == "postgresql":
        database_url = _fresh_database(request.getfixturevalue("postgres_url"))
    box: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            trio.run(_serve, box, ready, database_url)
        except BaseException as exc:  # reported by the fixture, in the test's thread
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="omni-server", daemon=True)
    thread.start()
    assert ready.wait(30), "the server did not start"
    if "error" in box:
        raise box["error"]
    live: LiveServer = box["live"]
    try:
        yield live
    finally:
        trio.from_thread.run_sync(live.stop.set, trio_token=live.token)
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"
        if "error" in box:
            raise box["error"]


@pytest.fixture(scope="module")
def schema(live: LiveServer) -> Any:
    loaded = schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")
    loaded.config.update(base_url=live.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    return loaded


def test_the_served_document_is_valid_and_lists_every_operation(
    live: LiveServer, schema: Any
) -> None:
    schema.validate()  # OpenAPI 3.1 meta-schema
    served = []
    for result in schema.get_all_operations():
        operation = result.ok()  # raises if an operation cannot be read
        served.append((operation.method.upper(), operation.path))
    assert sorted(served) == sorted((m, p) for m, p, _ in OPERATIONS)


def _known_keys(live: LiveServer, path: str) -> list[dict[str, str]]:
    """Path parameters that name things that exist, besides the generated ones."""
    if "{id}" in path:
        return [{"id": cid} for cid in live.conversations.values()]
    if "{key}" not in path:
        return []
    kind = path.split("/")[3].replace("-", "_")
    return [{"key": key} for (k, key) in live.baseline if k == kind]


@pytest.mark.parametrize("method,path,mode", CASES)
def test_no_server_error_and_responses_match_the_document(
    live: LiveServer, schema: Any, method: str, path: str, mode: GenerationMode
) -> None:
    operation = schema[path][method]
    strategies = [operation.as_strategy(generation_mode=mode)]
    if mode is GenerationMode.POSITIVE:
        strategies += [
            operation.as_strategy(generation_mode=mode, path_parameters=known)
            for known in _known_keys(live, path)
        ]
        if path.endswith("/resume"):
            # Alice (1) is signed in: resuming the out-of-hours conversation can succeed.
            strategies.append(
                operation.as_strategy(
                    generation_mode=mode,
                    path_parameters={"id": live.conversations["out_of_hours"]},
                    body={"operator_id": 1},
                )
            )
    statuses: list[int] = []

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        try:
            response = case.call(timeout=10)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)
        finally:
            if method != "GET":
                live.restore_configuration()

    if mode is GenerationMode.POSITIVE:
        for case in _edge_cases(live, operation):
            fuzz = example(case=case)(fuzz)
    fuzz()
    assert statuses, "no request was made"


#: Valid RFC 3339 date-times at the ends of the range.
EDGE_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+05:00",
    "0001-01-02T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-05:00",
]
#: A valid JSON string / query value that a text column cannot hold as such.
NUL = "a\x00b"


def _edge_cases(live: LiveServer, operation: Any) -> list[Any]:
    """Explicit examples, run before the generated ones, of valid inputs hypothesis rarely
    reaches in a few examples: date-times at the ends of the range; a NUL character in string
    query parameters, in path parameters, and in the free text of existing resources."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    parameters = operation.definition.raw.get("parameters", [])
    cases = []
    path_names = [p["name"] for p in parameters if p["in"] == "path"]
    # A route with a path parameter (an attachment's id) gets one that names nothing.
    in_path = {n: "x" for n in path_names} or None
    for p in parameters:
        if p["in"] != "query" or p["schema"].get("type") != "string" or "enum" in p["schema"]:
            continue
        values = EDGE_TIMES if p["schema"].get("format") == "date-time" else [NUL]
        cases += [
            operation.Case(query={p["name"]: v}, path_parameters=in_path, headers=auth)
            for v in values
        ]
    method = operation.method.upper()
    if path_names and method in ("GET", "DELETE"):
        cases.append(operation.Case(path_parameters={n: NUL for n in path_names}, headers=auth))
    if path_names and operation.path.endswith("/resume"):
        cases.append(
            operation.Case(
                path_parameters={"id": NUL},
                body={"operator_id": 1},
                headers=auth,
                media_type="application/json",
            )
        )
    if method == "PUT":
        kind = operation.path.split("/")[3].replace("-", "_")
        for (k, key), body in live.baseline.items():
            if k != kind:
                continue
            edited = {f: v for f, v in body.items() if f not in ("token", "token_hash")}
            for text in ("name", "greeting", "logo"):
                if isinstance(edited.get(text), str):
                    edited[text] += NUL
            cases.append(
                operation.Case(
                    path_parameters={"key": key} if path_names else {},
                    body=edited,
                    headers=auth,
                    media_type="application/json",
                )
            )
    return cases
