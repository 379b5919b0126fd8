"""Schemathesis against the admin API as served: a real server on 127.0.0.1 (ephemeral ports,
memory store) in a thread of its own, its ``/openapi.json`` loaded over HTTP, every operation
fuzzed with positive and negative data under an admin bearer token.

What must hold for every generated request: no 5xx (``not_a_server_error``), and the response
matches what the document says about it (``response_schema_conformance``).

The server runs in its own ``trio.run`` in a background thread (schemathesis and hypothesis are
synchronous; these tests are plain sync tests). It holds live conversations in several states —
active, closed, queued, out of hours — with the operator Alice signed in, so the conversation
endpoints have something real to return and resume can succeed.

Order independence: after every POST, PUT or DELETE (a successful one may have deleted a group,
a service or the test's own admin token), the configuration is put back to the baseline straight through the server's ``Configuration``
(in its trio thread), so every generated request meets the same configuration whatever ran
before it, and no earlier deletion can turn later requests into 404s or 401s that would hide a
5xx. Operations run read-only first, then writes, deletions last.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from admin_api.app import create_app
from admin_api.openapi import document
from omni.config import RESOURCES, ApiTokenBody, to_item
from omni.domain.model import Role
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from omni.store import ConfigItem
from omni.store.memory import MemoryStore
from tests.support import connect_tcp, login, make_config, start

ADMIN_TOKEN = "admin-secret-token"
MAX_EXAMPLES = 15
CHECKS = [not_a_server_error, response_schema_conformance]
#: Dependency order: a resource only refers to kinds before it.
KINDS = ("schedules", "groups", "services", "operators", "parameters", "api_tokens")


def _documented_operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every operation, from the same declarations the server serves (the
    routes only touch the hub and the configuration when a request comes, so none is needed
    here). Read-only operations first, then writes, deletions last."""
    app = create_app(None, CollectorRegistry(), object())  # type: ignore[arg-type]
    doc = document(app.extensions["omni_api"].routes)
    operations = [(m.upper(), p) for p, methods in doc["paths"].items() for m in methods]
    rank = {"GET": 0, "POST": 1, "PUT": 2, "DELETE": 3}
    return sorted(operations, key=lambda op: rank[op[0]])


OPERATIONS = _documented_operations()


@dataclass
class LiveServer:
    server: RunningServer
    token: trio.lowlevel.TrioToken
    stop: trio.Event
    baseline: dict[tuple[str, str], dict[str, Any]]
    conversations: dict[str, str] = field(default_factory=dict)
    resets: int = 0

    @property
    def base_url(self) -> str:
        return self.server.http_url

    def restore_configuration(self) -> None:
        """Put the configuration back to the baseline, in the server's own trio thread."""
        trio.from_thread.run(self._restore, trio_token=self.token)
        self.resets += 1

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
    return [
        "default" if key_field is None else str(body[key_field]) for body in config.list(kind)
    ]


def _snapshot(config: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(kind, key): config.get(kind, key) for kind in KINDS for key in _keys(config, kind)}


async def _serve(box: dict[str, Any], ready: threading.Event) -> None:
    config = make_config()
    config.items.append(
        to_item(
            RESOURCES["api_tokens"],
            ApiTokenBody(id="root", name="Root", role=Role.ADMIN, token=ADMIN_TOKEN),
        )
    )
    stop = trio.Event()
    async with open_server(
        config,
        store=MemoryStore(),
        entropy=SeededEntropy(11),
        host="127.0.0.1",
        ws_port=0,
        http_port=0,
    ) as server:
        ws = server.ws_url
        async with (
            connect_tcp(f"{ws}/ws/operator") as alice,
            connect_tcp(f"{ws}/ws/visitor") as v_active,
            connect_tcp(f"{ws}/ws/visitor") as v_closed,
            connect_tcp(f"{ws}/ws/visitor") as v_queued,
            connect_tcp(f"{ws}/ws/visitor") as v_ooh,
        ):
            await login(alice, "tok-alice")
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


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    box: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            trio.run(_serve, box, ready)
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
    loaded.config.update(
        base_url=live.base_url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    return loaded


def test_the_served_document_is_valid_and_lists_every_operation(
    live: LiveServer, schema: Any
) -> None:
    schema.validate()  # OpenAPI 3.1 meta-schema
    served = []
    for result in schema.get_all_operations():
        operation = result.ok()  # raises if an operation cannot be read
        served.append((operation.method.upper(), operation.path))
    assert sorted(served) == sorted(OPERATIONS)


def _known_keys(live: LiveServer, path: str) -> list[dict[str, str]]:
    """Path parameters that name things that exist, besides the generated ones."""
    if "{id}" in path:
        return [{"id": cid} for cid in live.conversations.values()]
    if "{key}" not in path:
        return []
    kind = path.split("/")[3].replace("-", "_")
    return [{"key": key} for (k, key) in live.baseline if k == kind]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("method,path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
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

    fuzz()
    assert statuses, "no request was made"
