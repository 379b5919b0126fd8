"""The admin API (``admin_api``), end to end: a whole server on 127.0.0.1 reached over real HTTP
(httpx) and real websockets, plus the same app through Quart's test client — in virtual time
where timings must be exact (reports).

Every assertion states the exact status and body; errors are RFC 9457 problem details.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed

from admin_api.app import create_app
from omni.actors.configuration import Configuration
from omni.config import Config, public
from omni.domain.configuration import body_of
from omni.domain.conversation import Conversation, Status
from omni.domain.model import Role, Service
from omni.domain.reports import report
from omni.entropy import SeededEntropy
from omni.metrics import make_registry
from omni.server import RunningServer, open_server
from omni.store import StoredEvent, Write
from tests.support import (
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    api_token,
    connect_memory,
    connect_tcp,
    eventually,
    login,
    make_config,
    make_conversation,
    open_memory_gateway,
    start,
    with_items,
)

ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
SUPERVISOR = "supervisor-secret-token-Gz2Hb8Mc5W"
OPERATOR = "operator-secret-token-Tf4Yj7Ds3Q"
OPERATOR_TOKENS = (TOK_ALICE, TOK_BRUNO, TOK_CARLA)
PROBLEM_KEYS = {"type", "title", "status", "detail"}


def admin_config(**server: Any) -> Config:
    """``make_config`` plus an admin, a supervisor and an operator-role API token."""
    return with_items(
        make_config(**server),
        api_token("root", ADMIN),
        api_token("boss", SUPERVISOR, Role.SUPERVISOR),
        api_token("desk", OPERATOR, Role.OPERATOR, operator_id=1),  # Alice's
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def srv() -> AsyncIterator[RunningServer]:
    async with open_server(
        admin_config(), entropy=SeededEntropy(11), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


@pytest.fixture
async def http(srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=srv.http_url, headers=bearer(ADMIN), timeout=10) as c:
        yield c


def assert_problem(
    response: httpx.Response, status: int, detail: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"].startswith("https://omni.dev/problems/")
    assert isinstance(body["title"], str) and body["title"]
    if detail is not None:
        assert detail in body["detail"], body
    return body


async def audit_ids(http: httpx.AsyncClient) -> list[int]:
    r = await http.get("/api/v1/audit", params={"limit": 500})
    assert r.status_code == 200
    return [e["id"] for e in r.json()["items"]]


# -- configuration resources: CRUD ------------------------------------------------------------

SERVICE_NEW = {
    "id": 40,
    "name": "Sales",
    "links": [{"group": 2}, {"group": 1, "schedule": "never"}],
}


def _service_full(body: dict[str, Any]) -> dict[str, Any]:
    shown = public(body_of(msgspec.convert(body, Service)))
    assert shown is not None
    return shown


@dataclass(frozen=True)
class Case:
    path: str
    existing: str
    existing_body: dict[str, Any]
    new: dict[str, Any]
    new_out: dict[str, Any]
    changed: dict[str, Any]
    changed_out: dict[str, Any]


CASES = {
    "services": Case(
        "/api/v1/services",
        "27",
        _service_full(
            {
                "id": 27,
                "name": "No survey",
                "schedule": "always",
                "survey": "none",
                "closing_message": "See you.",
                "links": [{"group": 2}],
            }
        ),
        SERVICE_NEW,
        _service_full(SERVICE_NEW),
        {**SERVICE_NEW, "name": "Sales EU", "greeting": "Olá!"},
        _service_full({**SERVICE_NEW, "name": "Sales EU", "greeting": "Olá!"}),
    ),
    "groups": Case(
        "/api/v1/groups",
        "2",
        {"id": 2, "name": "Billing"},
        {"id": 7, "name": "VIP"},
        {"id": 7, "name": "VIP"},
        {"id": 7, "name": "VIP desk"},
        {"id": 7, "name": "VIP desk"},
    ),
    "schedules": Case(
        "/api/v1/schedules",
        "never",
        {
            "id": "never",
            "timezone": "America/Sao_Paulo",
            "weekly": {},
            "holidays": [],
            "special_days": [],
        },
        {"id": "office", "timezone": "Europe/Lisbon", "weekly": {"mon": [["09:00", "12:00"]]}},
        {
            "id": "office",
            "timezone": "Europe/Lisbon",
            "weekly": {"mon": [["09:00", "12:00"]]},
            "holidays": [],
            "special_days": [],
        },
        {
            "id": "office",
            "timezone": "Europe/Lisbon",
            "weekly": {"mon": [["09:00", "12:00"], ["13:00", "18:00"]]},
            "holidays": ["2026-12-25"],
            "special_days": [{"date": "2026-12-24", "intervals": [["09:00", "12:00"]]}],
        },
        {
            "id": "office",
            "timezone": "Europe/Lisbon",
            "weekly": {"mon": [["09:00", "12:00"], ["13:00", "18:00"]]},
            "holidays": ["2026-12-25"],
            "special_days": [{"date": "2026-12-24", "intervals": [["09:00", "12:00"]]}],
        },
    ),
    "operators": Case(
        "/api/v1/operators",
        "2",
        {"id": 2, "name": "Bruno", "groups": [2], "capacity": 1, "active": True},
        {"id": 9, "name": "Dora", "groups": [1], "token": "tok-dora-1234-Xe5Ru9Kw2P"},
        {"id": 9, "name": "Dora", "groups": [1], "capacity": 3, "active": True},
        {"id": 9, "name": "Dora", "groups": [1, 2], "capacity": 4},
        {"id": 9, "name": "Dora", "groups": [1, 2], "capacity": 4, "active": True},
    ),
    "api-tokens": Case(
        "/api/v1/api-tokens",
        "boss",
        {"id": "boss", "name": "Boss", "role": "supervisor", "operator_id": None},
        {"id": "ci", "name": "CI", "role": "supervisor", "token": "ci-secret-token-Pw8Ta2Jm4H"},
        {"id": "ci", "name": "CI", "role": "supervisor", "operator_id": None},
        {"id": "ci", "name": "CI bot", "role": "operator", "operator_id": 2},
        {"id": "ci", "name": "CI bot", "role": "operator", "operator_id": 2},
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_resource_crud(http: httpx.AsyncClient, kind: str) -> None:
    case = CASES[kind]
    key = str(case.new["id"])

    listed = await http.get(case.path)
    assert listed.status_code == 200 and listed.headers["content-type"] == "application/json"
    assert case.existing_body in listed.json()
    got = await http.get(f"{case.path}/{case.existing}")
    assert got.status_code == 200 and got.json() == case.existing_body
    assert_problem(await http.get(f"{case.path}/404404"), 404)

    created = await http.post(case.path, json=case.new)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{case.path}/{key}"
    assert created.json() == case.new_out
    assert (await http.get(f"{case.path}/{key}")).json() == case.new_out
    assert case.new_out in (await http.get(case.path)).json()

    assert_problem(await http.post(case.path, json=case.new), 409, key)

    updated = await http.put(f"{case.path}/{key}", json=case.changed)
    assert updated.status_code == 200, updated.text
    assert updated.json() == case.changed_out
    assert (await http.get(f"{case.path}/{key}")).json() == case.changed_out

    # The body's id must be the path's.
    other = {**case.changed, "id": case.existing_body["id"]}
    assert_problem(await http.put(f"{case.path}/{key}", json=other), 422, f"must be {key}")
    assert_problem(await http.put(f"{case.path}/404404", json=case.changed), 404)

    deleted = await http.delete(f"{case.path}/{key}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await http.get(f"{case.path}/{key}"), 404)
    assert_problem(await http.delete(f"{case.path}/{key}"), 404)
    assert case.changed_out not in (await http.get(case.path)).json()

    entries = (await http.get("/api/v1/audit", params={"limit": 3})).json()["items"]
    resource_kind = kind.replace("-", "_")
    assert [(e["action"], e["kind"], e["key"], e["actor"]) for e in entries] == [
        ("delete", resource_kind, key, "token:root"),
        ("update", resource_kind, key, "token:root"),
        ("create", resource_kind, key, "token:root"),
    ]
    assert entries[0]["before"] == case.changed_out and entries[0]["after"] is None
    assert entries[1]["before"] == case.new_out and entries[1]["after"] == case.changed_out
    assert entries[2]["before"] is None and entries[2]["after"] == case.new_out


async def test_parameters_are_a_singleton(http: httpx.AsyncClient) -> None:
    defaults = {
        "palette": {
            "button": "#0b5fff",
            "header": "#0b5fff",
            "panels": "#ffffff",
            "visitor_bubble": "#e8f0ff",
            "operator_bubble": "#f1f1f1",
        },
        "logo": "",
        "all_fields_required": False,
        "attachments": {
            "enabled": False,
            "max_bytes": 10485760,
            "types": ["image/png", "image/jpeg", "application/pdf"],
            "folder": "attachments",
            "max_files_per_conversation": 20,
            "max_bytes_per_conversation": 104857600,
        },
        "pause_reasons": [
            {"id": "lunch", "label": "Lunch"},
            {"id": "break", "label": "Break"},
            {"id": "training", "label": "Training"},
            {"id": "other", "label": "Other"},
        ],
    }
    got = await http.get("/api/v1/parameters")
    assert got.status_code == 200 and got.json() == defaults

    changed = {
        "palette": {"button": "#112233"},
        "logo": "/logo.svg",
        "all_fields_required": True,
    }
    expected = {
        **defaults,
        "palette": {**defaults["palette"], "button": "#112233"},
        "logo": "/logo.svg",
        "all_fields_required": True,
    }
    put = await http.put("/api/v1/parameters", json=changed)
    assert put.status_code == 200 and put.json() == expected
    assert (await http.get("/api/v1/parameters")).json() == expected
    again = await http.put("/api/v1/parameters", json={})
    assert again.status_code == 200 and again.json() == defaults

    entries = (await http.get("/api/v1/audit", params={"limit": 2})).json()["items"]
    assert [(e["action"], e["kind"], e["key"]) for e in entries] == [
        ("update", "parameters", "default"),
        ("create", "parameters", "default"),
    ]
    assert entries[0]["before"] == expected and entries[0]["after"] == defaults
    assert entries[1]["before"] is None and entries[1]["after"] == expected

    # A singleton has no id routes and cannot be created or deleted.
    assert_problem(await http.delete("/api/v1/parameters"), 405)
    assert_problem(await http.post("/api/v1/parameters", json={}), 405)
    assert_problem(await http.get("/api/v1/parameters/default"), 404)
    assert_problem(await http.put("/api/v1/parameters", json={"logo": 7}), 422, "$.logo")


INVALID = [
    ("post", "/api/v1/services", {"id": 41, "name": "x", "links": []}, "$.links"),
    ("post", "/api/v1/services", {"id": 41, "name": "x"}, "links"),
    ("post", "/api/v1/services", {"id": 0, "name": "x", "links": [{"group": 1}]}, "$.id"),
    (
        "post",
        "/api/v1/services",
        {"id": 41, "name": "x", "links": [{"group": 1}], "survey": "custom"},
        "service 41: a custom survey needs at least one question",
    ),
    (
        "post",
        "/api/v1/services",
        {
            "id": 41,
            "name": "x",
            "links": [{"group": 1}],
            "survey": "custom",
            "survey_questions": [
                {"id": "pick", "kind": "choice", "label": "Pick", "options": ["a"]}
            ],
        },
        "question 'pick': a choice needs at least two options - at `$.survey_questions[0]`",
    ),
    (
        "post",
        "/api/v1/services",
        {
            "id": 41,
            "name": "x",
            "links": [{"group": 1}],
            "survey": "custom",
            "survey_questions": [
                {"id": "stars", "kind": "rating", "label": "S", "min": 5, "max": 5}
            ],
        },
        "question 'stars': min must be below max - at `$.survey_questions[0]`",
    ),
    (
        "post",
        "/api/v1/services",
        {"id": 41, "name": "x", "links": [{"group": 1}, {"group": 1}]},
        "service 41: links: group 1 is linked twice",
    ),
    (
        "post",
        "/api/v1/services",
        {"id": 41, "name": "x", "links": [{"group": 1}], "timers": {"offer_timeout": 0}},
        "$.timers.offer_timeout",
    ),
    ("post", "/api/v1/groups", {"id": 8, "name": ""}, "$.name"),
    ("post", "/api/v1/groups", {"id": "eight", "name": "Eight"}, "$.id"),
    (
        "post",
        "/api/v1/operators",
        {
            "id": 9,
            "name": "Dora",
            "groups": [1],
            "capacity": 0,
            "token": "tok-dora-1234-Xe5Ru9Kw2P",
        },
        "$.capacity",
    ),
    (
        "post",
        "/api/v1/operators",
        {"id": 9, "name": "Dora", "groups": [1], "token": "short"},
        "$.token",
    ),
    (
        "post",
        "/api/v1/operators",
        {"id": 9, "name": "Dora", "groups": [1], "token": "dora-password-2026"},
        "token is too weak: about 110 bits of entropy, at least 128 are needed",
    ),
    (
        "post",
        "/api/v1/api-tokens",
        {"id": "x", "name": "X", "role": "admin", "token": "abababababababababababababababab"},
        "token is too weak: 2 distinct characters, at least 10 are needed",
    ),
    (
        "post",
        "/api/v1/operators",
        {"id": 9, "name": "Dora", "groups": [1], "token_hash": "ab" * 32},
        "unknown field `token_hash`",
    ),
    ("put", "/api/v1/parameters", {"palette": {"button": "#12"}}, "$.palette.button"),
    ("put", "/api/v1/parameters", {"attachments": {"max_bytes": 0}}, "$.attachments.max_bytes"),
    (
        "put",
        "/api/v1/parameters",
        {"attachments": {"types": ["image/svg+xml"]}},
        "'image/svg+xml' cannot be recognised by content",
    ),
    (
        "put",
        "/api/v1/parameters",
        {"attachments": {"folder": "../etc"}},
        "$.attachments.folder",
    ),
    (
        "post",
        "/api/v1/services",
        {"id": 41, "name": "x", "links": [{"group": 1}], "attachments": {"types": ["text/html"]}},
        "'text/html' cannot be recognised by content",
    ),
    (
        "post",
        "/api/v1/schedules",
        {"id": "bad", "timezone": "UTC", "weekly": {"funday": [["08:00", "12:00"]]}},
        "unknown field `funday` - at `$.weekly`",
    ),
    (
        "post",
        "/api/v1/schedules",
        {"id": "bad", "timezone": "UTC", "weekly": {"mon": [["12:00", "08:00"]]}},
        "invalid interval 12:00-08:00: the start must be before the end",
    ),
    (
        "post",
        "/api/v1/schedules",
        {
            "id": "bad",
            "timezone": "UTC",
            "weekly": {"mon": [["08:00", "12:00"], ["11:00", "13:00"]]},
        },
        "must not overlap",
    ),
    (
        "post",
        "/api/v1/schedules",
        {"id": "bad", "timezone": "UTC", "weekly": {"mon": [["08:00"]]}},
        "$.weekly.mon[0]",
    ),
    (
        "post",
        "/api/v1/schedules",
        {"id": "bad", "timezone": "Mars/Olympus_Mons"},
        "unknown time zone 'Mars/Olympus_Mons'",
    ),
    ("post", "/api/v1/schedules", {"id": "no spaces", "timezone": "UTC"}, "$.id"),
    ("post", "/api/v1/api-tokens", {"id": "x", "name": "X", "role": "god"}, "$.role"),
    (
        "post",
        "/api/v1/groups",
        {"id": 8, "name": "Eight", "colour": "red"},
        "unknown field `colour`",
    ),
    ("post", "/api/v1/groups", [1, 2], "Expected `object`, got `array`"),
    (
        "post",
        "/api/v1/services",
        {
            "id": 41,
            "name": "x",
            "links": [{"group": 1}],
            "timers": {"visitor_idle_warning": 120, "visitor_idle_close": 60},
        },
        "visitor_idle_close must be longer than visitor_idle_warning",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "detail"), INVALID)
async def test_invalid_bodies_are_refused_naming_the_field(
    http: httpx.AsyncClient, method: str, path: str, body: Any, detail: str
) -> None:
    before = await audit_ids(http)
    response = await http.request(method.upper(), path, json=body)
    problem = assert_problem(response, 422, detail)
    assert problem["title"] == "Unprocessable Content"
    assert await audit_ids(http) == before, "nothing is stored for a refused body"


async def test_changes_that_break_references(http: httpx.AsyncClient, srv: RunningServer) -> None:
    before = await audit_ids(http)
    # Deleting what others use: 409, and nothing changes.
    problem = assert_problem(
        await http.delete("/api/v1/groups/1"), 409, "service 25: unknown group 1"
    )
    assert "operator 1: unknown group 1" in problem["detail"]
    assert_problem(await http.delete("/api/v1/schedules/always"), 409, "unknown schedule 'always'")
    # Creating or changing something that points at nothing: 422.
    assert_problem(
        await http.post("/api/v1/services", json={"id": 41, "name": "x", "links": [{"group": 99}]}),
        422,
        "service 41: unknown group 99",
    )
    assert_problem(
        await http.post(
            "/api/v1/services",
            json={"id": 41, "name": "x", "schedule": "nope", "links": [{"group": 1}]},
        ),
        422,
        "service 41: unknown schedule 'nope'",
    )
    assert_problem(
        await http.post(
            "/api/v1/operators",
            json={"id": 9, "name": "Dora", "groups": [1, 42], "token": "tok-dora-1234-Xe5Ru9Kw2P"},
        ),
        422,
        "operator 9: unknown group 42",
    )
    body = (await http.get("/api/v1/services/25")).json()
    assert_problem(
        await http.put(
            "/api/v1/services/25", json={**body, "links": [{"group": 1, "schedule": "x"}]}
        ),
        422,
        "unknown schedule 'x'",
    )
    assert await audit_ids(http) == before
    assert 1 in srv.hub.directory.groups and "always" in srv.hub.directory.schedules
    # Once nothing uses it, it can go.
    assert (await http.delete("/api/v1/schedules/never")).status_code == 409
    put = await http.put("/api/v1/services/26", json={**body, "id": 26, "schedule": None})
    assert put.status_code == 200
    assert (await http.delete("/api/v1/schedules/never")).status_code == 204
    assert "never" not in srv.hub.directory.schedules


async def test_malformed_requests(http: httpx.AsyncClient) -> None:
    before = await audit_ids(http)
    raw = {"content-type": "application/json"}
    problem = assert_problem(await http.post("/api/v1/groups", content=b"{", headers=raw), 400)
    assert problem["detail"].startswith("the body is not valid JSON")
    assert_problem(await http.put("/api/v1/groups/1", content=b"not json", headers=raw), 400)
    assert_problem(await http.post("/api/v1/groups", content=b"", headers=raw), 400)
    assert_problem(
        await http.post("/api/v1/groups", content=b'{"id": 8, "name": "Eight"}'),  # no type
        415,
        "application/json",
    )
    assert_problem(
        await http.post(
            "/api/v1/groups",
            content=b'{"id": 8, "name": "Eight"}',
            headers={"content-type": "text/plain"},
        ),
        415,
    )
    assert_problem(await http.post("/api/v1/groups", data={"id": "8", "name": "Eight"}), 415)
    assert_problem(await http.get("/api/v1/nothing-here"), 404)
    assert_problem(await http.patch("/api/v1/groups/1", json={}), 405)
    assert await audit_ids(http) == before


async def test_creating_the_same_id_concurrently_creates_it_once(srv: RunningServer) -> None:
    """Two simultaneous POSTs of one id: one is created (201), the other is a conflict (409).
    The existence check must not be separated from the write by a checkpoint."""
    app = create_app(srv.hub, make_registry(srv.hub), srv.configuration)
    client = app.test_client()
    results: dict[str, int] = {}

    async def post(name: str) -> None:
        r = await client.post("/api/v1/groups", json={"id": 9, "name": name}, headers=bearer(ADMIN))
        results[name] = r.status_code

    async with trio.open_nursery() as nursery:
        nursery.start_soon(post, "First")
        nursery.start_soon(post, "Second")
    assert sorted(results.values()) == [201, 409], results
    winner = next(name for name, status in results.items() if status == 201)
    assert srv.configuration.get("groups", "9") == {"id": 9, "name": winner}
    entries = await srv.configuration.store.audit_entries(5)
    assert [(e.action, e.key) for e in entries if e.kind == "groups"] == [("create", "9")]


async def test_two_operators_cannot_share_a_console_token(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    """A configuration file with two operators sharing a token is refused (parse_config); the
    API must refuse the same state, or whoever holds the token signs in as another operator."""
    before = await audit_ids(http)
    alice = (await http.get("/api/v1/operators/1")).json()
    put = await http.put("/api/v1/operators/1", json={**alice, "token": TOK_CARLA})
    post = await http.post(
        "/api/v1/operators",
        json={"id": 9, "name": "Dora", "groups": [1], "token": TOK_BRUNO},
    )
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as carla:
        welcome = await login(carla, TOK_CARLA, available=False)
    assert welcome["operator"]["id"] == 3, f"Carla's token signed in {welcome['operator']}"
    for response in (put, post):
        assert response.status_code in (409, 422), response.text
        assert_problem(response, response.status_code, "token")
    assert await audit_ids(http) == before


# -- authentication and roles -----------------------------------------------------------------


BACKOFF = {"failures_before_wait": 3, "failure_wait": 2.0, "failure_wait_max": 5.0}


@asynccontextmanager
async def api_without_token(**server: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A whole server (``admin_config(**server)``) and an HTTP client without a token."""
    async with (
        open_server(admin_config(**server), host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(base_url=srv.http_url, timeout=10) as http,
    ):
        yield http


async def _groups(
    http: httpx.AsyncClient, token: str, forwarded: str | None = None
) -> httpx.Response:
    headers = bearer(token) | ({"X-Forwarded-For": forwarded} if forwarded else {})
    return await http.get("/api/v1/groups", headers=headers)


def assert_waits(response: httpx.Response, seconds: int) -> None:
    body = assert_problem(response, 429, f"try again in {seconds} s")
    assert body["type"] == "https://omni.dev/problems/too-many-attempts"
    assert response.headers["Retry-After"] == str(seconds)


async def test_wrong_tokens_make_the_address_wait_longer_each_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    """After ``failures_before_wait`` wrong tokens, each further one makes the address wait
    ``failure_wait`` seconds, doubled each time up to ``failure_wait_max``; while it waits, any
    token it sends — the right one too — gets 429 and ``Retry-After`` (whole seconds, rounded
    up) without being looked at. A right token forgets the address's failures."""
    mock_clock.rate = 1.0
    async with api_without_token(limits=BACKOFF) as http:
        for _ in range(3):
            assert_problem(await _groups(http, "wrong-token"), 401, "unknown or revoked")
        assert_problem(await _groups(http, "wrong-token"), 401)  # the 4th: wait 2 s
        assert_waits(await _groups(http, "wrong-token"), 2)
        assert_waits(await _groups(http, ADMIN), 2)
        # Without a token there is nothing to guess: 401 as always.
        assert_problem(await http.get("/api/v1/groups"), 401, "send an API token")
        mock_clock.jump(1.5)
        assert_waits(await _groups(http, ADMIN), 1)  # 0.5 s left, rounded up
        mock_clock.jump(0.6)
        assert_problem(await _groups(http, "wrong-token"), 401)  # the 5th: wait 4 s
        assert_waits(await _groups(http, ADMIN), 4)
        mock_clock.jump(4.1)
        assert_problem(await _groups(http, "wrong-token"), 401)  # the 6th: 8 s, capped at 5
        assert_waits(await _groups(http, "wrong-token"), 5)
        mock_clock.jump(5.1)
        assert (await _groups(http, ADMIN)).status_code == 200
        # Forgotten: three free failures again, then 2 s.
        for _ in range(4):
            assert_problem(await _groups(http, "wrong-token"), 401)
        assert_waits(await _groups(http, SUPERVISOR), 2)


async def test_a_forged_forwarded_for_does_not_escape_the_wait() -> None:
    """Without trusted proxies, ``X-Forwarded-For`` is the client's own say: each request
    naming another address still counts against the peer's."""
    async with api_without_token(limits=BACKOFF) as http:
        for n in range(4):
            response = await _groups(http, "wrong-token", forwarded=f"203.0.113.{n}")
            assert_problem(response, 401)
        assert_waits(await _groups(http, ADMIN, forwarded="198.51.100.9"), 2)


async def test_behind_a_trusted_proxy_the_forwarded_address_waits() -> None:
    """With 127.0.0.1 a trusted proxy, the address it forwards for is the client: that one
    waits; other clients behind the same proxy, and the proxy itself, do not."""
    async with api_without_token(limits=BACKOFF, trusted_proxies=["127.0.0.1"]) as http:
        # The proxy appends the address it got the request from; what the client wrote
        # before it (here 10.9.9.9) is not believed.
        for n in range(4):
            forwarded = f"10.{n}.{n}.{n}, 203.0.113.7"
            assert_problem(await _groups(http, "wrong-token", forwarded=forwarded), 401)
        assert_waits(await _groups(http, ADMIN, forwarded="203.0.113.7"), 2)
        assert_waits(await _groups(http, ADMIN, forwarded="10.9.9.9, 203.0.113.7"), 2)
        assert (await _groups(http, ADMIN, forwarded="203.0.113.8")).status_code == 200
        assert (await _groups(http, ADMIN)).status_code == 200  # the proxy's own request


async def test_authentication(srv: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as anon:
        for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {ADMIN}"}):
            r = await anon.get("/api/v1/services", headers=headers)
            assert_problem(r, 401, "Authorization: Bearer")
            assert r.headers["www-authenticate"] == 'Bearer realm="omni"'
        r = await anon.get("/api/v1/services", headers=bearer("not-a-real-token"))
        assert_problem(r, 401, "unknown or revoked API token")
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await anon.post("/api/v1/groups", json={"id": 8, "name": "x"})
        assert_problem(r, 401)
        # An operator's console token is not an API token.
        assert_problem(await anon.get("/api/v1/conversations", headers=bearer(TOK_ALICE)), 401)
        # The scheme is case-insensitive.
        r = await anon.get("/api/v1/groups/1", headers={"Authorization": f"bearer {ADMIN}"})
        assert r.status_code == 200 and r.json() == {"id": 1, "name": "Support"}
        # Open endpoints need nothing.
        assert (await anon.get("/healthz")).json() == {
            "status": "ok",
            "conversations": 0,
            "operators_online": 0,
        }
        assert (await anon.get("/openapi.json")).status_code == 200
        assert (await anon.get("/metrics")).status_code == 200


async def test_roles(srv: RunningServer) -> None:
    async with (
        httpx.AsyncClient(base_url=srv.http_url, headers=bearer(SUPERVISOR)) as boss,
        httpx.AsyncClient(base_url=srv.http_url, headers=bearer(OPERATOR)) as desk,
    ):
        for path in (
            "/api/v1/services",
            "/api/v1/groups/1",
            "/api/v1/schedules",
            "/api/v1/operators",
            "/api/v1/parameters",
            "/api/v1/audit",
            "/api/v1/queues",
            "/api/v1/reports",
            "/api/v1/conversations",
        ):
            assert (await boss.get(path)).status_code == 200, path
        assert (await boss.get("/api/v1/groups/1")).json() == {"id": 1, "name": "Support"}
        for method, path, body in (
            ("POST", "/api/v1/groups", {"id": 8, "name": "Eight"}),
            ("PUT", "/api/v1/groups/1", {"id": 1, "name": "Renamed"}),
            ("DELETE", "/api/v1/groups/3", None),
            ("PUT", "/api/v1/parameters", {}),
            ("GET", "/api/v1/api-tokens", None),
            ("GET", "/api/v1/api-tokens/boss", None),
            ("POST", "/api/v1/api-tokens", {"id": "me", "name": "Me", "role": "admin"}),
        ):
            r = await boss.request(method, path, json=body)
            assert_problem(r, 403, "a supervisor token may not do this")

        listed = await desk.get("/api/v1/conversations")
        assert listed.status_code == 200 and listed.json() == {"items": [], "next_cursor": None}
        for path in (
            "/api/v1/services",
            "/api/v1/groups/1",
            "/api/v1/parameters",
            "/api/v1/api-tokens",
            "/api/v1/audit",
            "/api/v1/queues",
            "/api/v1/reports",
        ):
            assert_problem(await desk.get(path), 403, "operator token may not do this")
        assert_problem(await desk.delete("/api/v1/groups/3"), 403)
    assert srv.configuration.get("groups", "1") == {"id": 1, "name": "Support"}
    assert srv.configuration.get("groups", "3") is not None


async def test_role_changes_and_revocation_apply_at_once(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    async with httpx.AsyncClient(base_url=srv.http_url, headers=bearer(SUPERVISOR)) as boss:
        assert (await boss.put("/api/v1/parameters", json={})).status_code == 403
        r = await http.put(
            "/api/v1/api-tokens/boss", json={"id": "boss", "name": "Boss", "role": "admin"}
        )
        assert r.status_code == 200 and r.json() == {
            "id": "boss",
            "name": "Boss",
            "role": "admin",
            "operator_id": None,
        }
        # The token was not sent: the stored one is kept, now with the admin role.
        assert (await boss.put("/api/v1/parameters", json={})).status_code == 200
        assert (await http.delete("/api/v1/api-tokens/boss")).status_code == 204
        assert_problem(await boss.get("/api/v1/groups"), 401, "unknown or revoked")


# -- operator tokens and the last admin ---------------------------------------------------------


async def test_an_operator_token_sees_and_resumes_only_as_its_operator(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    """``desk`` acts for Alice (groups 1 and 2: services 25 and 27, and 40 created below)."""
    evening = {"id": 40, "name": "Evening", "schedule": "never", "links": [{"group": 1}]}
    assert (await http.post("/api/v1/services", json=evening)).status_code == 201
    url = srv.ws_url
    async with (
        connect_tcp(f"{url}/ws/visitor") as mine_queued,
        connect_tcp(f"{url}/ws/visitor") as mine_closed,
        connect_tcp(f"{url}/ws/visitor") as other_closed,
        connect_tcp(f"{url}/ws/visitor") as other_handled,
        connect_tcp(f"{url}/ws/operator") as alice,
        httpx.AsyncClient(base_url=srv.http_url, headers=bearer(OPERATOR)) as desk,
    ):
        queued = (await start(mine_queued, 25, name="Quinn"))["conversation_id"]
        closed = (await start(mine_closed, 40, name="Olga"))["conversation_id"]
        foreign = (await start(other_closed, 26, name="Fritz"))["conversation_id"]
        handled = (await start(other_handled, 26, name="Hanna"))["conversation_id"]
        for visitor in (mine_closed, other_closed, other_handled):
            await visitor.expect("out_of_hours")
        await login(alice, TOK_ALICE, available=False)
        # Service 26 is not Alice's, but she takes one of its conversations (an admin asks).
        r = await http.post(f"/api/v1/conversations/{handled}/resume", json={"operator_id": 1})
        assert r.status_code == 200 and r.json()["operator_id"] == 1
        assert (await alice.until("assigned"))["conversation_id"] == handled

        everything = {c["id"] for c in (await http.get("/api/v1/conversations")).json()["items"]}
        assert everything == {queued, closed, foreign, handled}
        listed = (await desk.get("/api/v1/conversations")).json()["items"]
        assert {c["id"] for c in listed} == {queued, closed, handled}
        # Filters narrow the operator's view; they never widen it.
        r = await desk.get("/api/v1/conversations", params={"service_id": 26})
        assert [c["id"] for c in r.json()["items"]] == [handled]
        r = await desk.get("/api/v1/conversations", params={"status": "out_of_hours"})
        assert [c["id"] for c in r.json()["items"]] == [closed]
        for path in (f"/{handled}", f"/{handled}/transcript", f"/{closed}"):
            assert (await desk.get(f"/api/v1/conversations{path}")).status_code == 200, path
        # Another service's conversation does not exist as far as this token can tell.
        for path in (f"/{foreign}", f"/{foreign}/transcript"):
            assert_problem(await desk.get(f"/api/v1/conversations{path}"), 404, foreign)
        r = await desk.post(f"/api/v1/conversations/{foreign}/resume", json={"operator_id": 1})
        assert_problem(r, 404, foreign)

        # It resumes as its own operator only.
        path = f"/api/v1/conversations/{closed}/resume"
        r = await desk.post(path, json={"operator_id": 3})
        assert_problem(r, 403, "resumes as operator 1 only")
        assert (await http.get(f"/api/v1/conversations/{closed}")).json()["conversation"][
            "status"
        ] == "out_of_hours"
        r = await desk.post(path, json={"operator_id": 1})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "active" and r.json()["operator_id"] == 1
        assert (await alice.until("assigned"))["conversation_id"] == closed

        # Moved to another operator, the token follows: Carla (group 1) sees 25 and 40 only.
        moved = {"id": "desk", "name": "Desk", "role": "operator", "operator_id": 3}
        assert (await http.put("/api/v1/api-tokens/desk", json=moved)).status_code == 200
        listed = (await desk.get("/api/v1/conversations")).json()["items"]
        assert {c["id"] for c in listed} == {queued, closed}


async def test_an_operator_token_is_tied_to_an_existing_operator(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    unbound = {"id": "x", "name": "X", "role": "operator", "token": "x-secret-token-Sd9Fg3Kl7M"}
    r = await http.post("/api/v1/api-tokens", json=unbound)
    assert_problem(r, 422, "an operator token needs operator_id")
    r = await http.post("/api/v1/api-tokens", json={**unbound, "operator_id": 99})
    assert_problem(r, 422, "api token x: unknown operator 99")
    r = await http.post(
        "/api/v1/api-tokens", json={**unbound, "role": "supervisor", "operator_id": 2}
    )
    assert_problem(r, 422, "only an operator token is tied to an operator")
    r = await http.put(
        "/api/v1/api-tokens/desk", json={"id": "desk", "name": "D", "role": "operator"}
    )
    assert_problem(r, 422, "an operator token needs operator_id")
    assert srv.configuration.get("api_tokens", "x") is None
    assert srv.configuration.get("api_tokens", "desk") == {
        "id": "desk",
        "name": "Desk",
        "role": "operator",
        "operator_id": 1,
        "token_hash": hashlib.sha256(OPERATOR.encode()).hexdigest(),
    }
    # Alice cannot be deleted while a token acts for her.
    assert_problem(
        await http.delete("/api/v1/operators/1"), 409, "api token desk: unknown operator 1"
    )
    assert srv.configuration.get("operators", "1") is not None
    r = await http.post("/api/v1/api-tokens", json={**unbound, "operator_id": 2})
    assert r.status_code == 201 and r.json()["operator_id"] == 2


async def test_an_operator_token_stored_without_an_operator_is_refused() -> None:
    """A token stored before tokens named their operator still loads, but gets nothing."""
    config = with_items(
        admin_config(), api_token("old", "old-secret-token-Qa5Zs8Wx3R", Role.OPERATOR)
    )
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as running,
        httpx.AsyncClient(
            base_url=running.http_url, headers=bearer("old-secret-token-Qa5Zs8Wx3R")
        ) as old,
    ):
        for path in ("/api/v1/conversations", "/api/v1/conversations/2026-000001"):
            assert_problem(await old.get(path), 403, "not tied to an operator")


async def test_the_last_admin_token_can_be_neither_revoked_nor_demoted(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    assert_problem(await http.delete("/api/v1/api-tokens/root"), 409, "no admin API token")
    demoted = {"id": "root", "name": "Root", "role": "supervisor"}
    assert_problem(await http.put("/api/v1/api-tokens/root", json=demoted), 409, "no admin")
    assert srv.configuration.get("api_tokens", "root")["role"] == "admin"  # type: ignore[index]
    assert (await http.get("/api/v1/groups")).status_code == 200
    # With a second admin, either may go.
    second = {"id": "ops", "name": "Ops", "role": "admin", "token": "ops-secret-token-Ny6Ub1Ic4E"}
    assert (await http.post("/api/v1/api-tokens", json=second)).status_code == 201
    assert (await http.put("/api/v1/api-tokens/root", json=demoted)).status_code == 200
    async with httpx.AsyncClient(
        base_url=srv.http_url, headers=bearer("ops-secret-token-Ny6Ub1Ic4E")
    ) as ops:
        assert_problem(await ops.delete("/api/v1/api-tokens/ops"), 409, "no admin API token")
        assert (await ops.get("/api/v1/api-tokens/root")).json()["role"] == "supervisor"


# -- secrets ----------------------------------------------------------------------------------


def _walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _walk_keys(v)}
    return set()


async def test_secrets_never_leave_the_server(http: httpx.AsyncClient, srv: RunningServer) -> None:
    secrets = [
        ADMIN,
        SUPERVISOR,
        OPERATOR,
        *OPERATOR_TOKENS,
        "tok-dora-1234-Xe5Ru9Kw2P",
        "tok-dora-5678-Bn3Lq7Vz6C",
    ]
    created = await http.post(
        "/api/v1/operators",
        json={"id": 9, "name": "Dora", "groups": [1], "token": "tok-dora-1234-Xe5Ru9Kw2P"},
    )
    assert created.status_code == 201
    assert created.json() == {"id": 9, "name": "Dora", "groups": [1], "capacity": 3, "active": True}
    updated = await http.put(
        "/api/v1/operators/9",
        json={"id": 9, "name": "Dora", "groups": [1], "token": "tok-dora-5678-Bn3Lq7Vz6C"},
    )
    assert updated.status_code == 200 and "token" not in updated.json()
    r = await http.post(
        "/api/v1/api-tokens",
        json={"id": "ci", "name": "CI", "role": "admin", "token": "ci-secret-1-Mv7Nc2Bx9Lk4"},
    )
    assert r.status_code == 201 and r.json() == {
        "id": "ci",
        "name": "CI",
        "role": "admin",
        "operator_id": None,
    }
    secrets.append("ci-secret-1-Mv7Nc2Bx9Lk4")

    # The stored body holds only the hash.
    stored = srv.configuration.get("operators", "1")
    assert stored is not None and stored.get("token") is None
    assert re.fullmatch(r"[0-9a-f]{64}", stored["token_hash"])
    assert stored["token_hash"] == hashlib.sha256(TOK_ALICE.encode()).hexdigest()
    dora = srv.configuration.get("operators", "9")
    assert (
        dora is not None
        and dora["token_hash"] == hashlib.sha256(b"tok-dora-5678-Bn3Lq7Vz6C").hexdigest()
    )
    hashes = [hashlib.sha256(s.encode()).hexdigest() for s in secrets]

    texts = []
    for path in (
        "/api/v1/operators",
        "/api/v1/operators/1",
        "/api/v1/operators/9",
        "/api/v1/api-tokens",
        "/api/v1/api-tokens/root",
        "/api/v1/api-tokens/ci",
        "/api/v1/audit?limit=500",
        "/openapi.json",
    ):
        response = await http.get(path)
        assert response.status_code == 200
        texts.append(response.text)
        if path != "/openapi.json":
            keys = _walk_keys(response.json())
            assert "token" not in keys and "token_hash" not in keys, path
    audit = json.loads(texts[6])["items"]
    assert {"operators", "api_tokens"} <= {e["kind"] for e in audit}
    assert any(e["kind"] == "operators" and e["before"] and e["after"] for e in audit)
    for text in texts:
        for secret in [*secrets, *hashes]:
            assert secret not in text


async def test_a_generated_api_token_is_shown_once_and_works(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    created = await http.post(
        "/api/v1/api-tokens", json={"id": "gen", "name": "Gen", "role": "supervisor"}
    )
    assert created.status_code == 201
    body = created.json()
    token = body.pop("token")
    assert body == {"id": "gen", "name": "Gen", "role": "supervisor", "operator_id": None}
    assert isinstance(token, str) and len(token) >= 32
    assert "token" not in (await http.get("/api/v1/api-tokens/gen")).json()
    stored = srv.configuration.get("api_tokens", "gen")
    assert stored is not None and stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    async with httpx.AsyncClient(base_url=srv.http_url, headers=bearer(token)) as gen:
        assert (await gen.get("/api/v1/groups/2")).json() == {"id": 2, "name": "Billing"}
        assert (await gen.delete("/api/v1/groups/3")).status_code == 403
    entry = (await http.get("/api/v1/audit", params={"limit": 1})).json()["items"][0]
    assert entry["after"] == {
        "id": "gen",
        "name": "Gen",
        "role": "supervisor",
        "operator_id": None,
    }
    assert token not in (await http.get("/api/v1/audit")).text


async def test_a_generated_operator_token_is_shown_once_and_signs_in(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    """An operator created without a token gets one of the server's (256 random bits), shown
    in the creation's answer only, stored as its hash only."""
    created = await http.post("/api/v1/operators", json={"id": 9, "name": "Dora", "groups": [1]})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body.pop("token")
    assert body == {"id": 9, "name": "Dora", "groups": [1], "capacity": 3, "active": True}
    assert isinstance(token, str) and len(token) == 43  # secrets.token_urlsafe(32)
    assert "token" not in (await http.get("/api/v1/operators/9")).json()
    stored = srv.configuration.get("operators", "9")
    assert stored is not None and stored["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (await http.get("/api/v1/audit")).text
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as dora:
        assert (await login(dora, token, available=False))["operator"]["name"] == "Dora"


async def test_weak_tokens_are_refused_on_every_way_in(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    """Creating or rotating an operator's or an API token's secret needs 128 bits; the refusal
    names the field, and nothing changes."""
    alice = (await http.get("/api/v1/operators/1")).json()
    root = (await http.get("/api/v1/api-tokens/root")).json()
    before = await audit_ids(http)
    for method, path, body in (
        ("PUT", "/api/v1/operators/1", {**alice, "token": "alice-password"}),
        ("PUT", "/api/v1/api-tokens/root", {**root, "token": "rootrootrootrootrootroot"}),
        ("POST", "/api/v1/operators", {"id": 9, "name": "D", "groups": [1], "token": "Dora2026!"}),
        (
            "POST",
            "/api/v1/api-tokens",
            {"id": "ci", "name": "CI", "role": "admin", "token": "x" * 200},
        ),
    ):
        response = await http.request(method, path, json=body)
        assert_problem(response, 422, "token is too weak")
    assert await audit_ids(http) == before
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as alice_console:
        await login(alice_console, TOK_ALICE, available=False)


async def test_updating_an_operator_without_a_token_keeps_it(
    http: httpx.AsyncClient, srv: RunningServer
) -> None:
    old_hash = srv.configuration.get("operators", "2")["token_hash"]  # type: ignore[index]
    r = await http.put(
        "/api/v1/operators/2", json={"id": 2, "name": "Bruno B.", "groups": [1, 2], "capacity": 2}
    )
    assert r.status_code == 200
    assert r.json() == {
        "id": 2,
        "name": "Bruno B.",
        "groups": [1, 2],
        "capacity": 2,
        "active": True,
    }
    assert srv.configuration.get("operators", "2")["token_hash"] == old_hash  # type: ignore[index]
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as bruno:
        welcome = await login(bruno, TOK_BRUNO, available=False)
        assert welcome["operator"] == {
            "id": 2,
            "name": "Bruno B.",
            "capacity": 2,
            "status": "paused",
            "reason": None,
        }
        assert [g["id"] for g in welcome["groups"]] == [1, 2]
    # A new token replaces the old one.
    r = await http.put(
        "/api/v1/operators/2",
        json={"id": 2, "name": "Bruno", "groups": [2], "token": "tok-bruno-2026-Hj4Gf8Dk1S"},
    )
    assert r.status_code == 200
    async with (
        connect_tcp(f"{srv.ws_url}/ws/operator") as old,
        connect_tcp(f"{srv.ws_url}/ws/operator") as new,
    ):
        await old.send("login", token=TOK_BRUNO)
        assert (await old.expect("error"))["code"] == "invalid_login"
        assert (await login(new, "tok-bruno-2026-Hj4Gf8Dk1S", available=False))["operator"][
            "id"
        ] == 2


# -- audit ------------------------------------------------------------------------------------


async def test_audit_log_newest_first_with_paging(http: httpx.AsyncClient) -> None:
    first = await http.get("/api/v1/audit")
    assert first.status_code == 200
    bootstrap = first.json()["items"]
    # The configuration file was imported at start-up, each item audited.
    assert {e["actor"] for e in bootstrap} == {"bootstrap"}
    assert {e["action"] for e in bootstrap} == {"create"}
    assert first.json()["next_before"] is None
    for n in range(5):
        r = await http.post("/api/v1/groups", json={"id": 10 + n, "name": f"G{n}"})
        assert r.status_code == 201
    assert (await http.put("/api/v1/groups/10", json={"id": 10, "name": "G0b"})).status_code == 200
    assert (await http.delete("/api/v1/groups/11")).status_code == 204

    everything = (await http.get("/api/v1/audit", params={"limit": 500})).json()["items"]
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    newest = everything[:7]
    assert [(e["action"], e["key"]) for e in newest] == [
        ("delete", "11"),
        ("update", "10"),
        ("create", "14"),
        ("create", "13"),
        ("create", "12"),
        ("create", "11"),
        ("create", "10"),
    ]
    assert all(e["actor"] == "token:root" and e["kind"] == "groups" for e in newest)
    assert newest[0]["before"] == {"id": 11, "name": "G1"} and newest[0]["after"] is None
    assert newest[1]["before"] == {"id": 10, "name": "G0"}
    assert newest[1]["after"] == {"id": 10, "name": "G0b"}
    for e in newest:
        at = datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
        assert e["at"].endswith("Z") and abs(datetime.now(UTC) - at) < timedelta(minutes=5)

    walked: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        page = (await http.get("/api/v1/audit", params=params)).json()
        walked += page["items"]
        pages += 1
        assert len(page["items"]) <= 3
        if page["next_before"] is None:
            break
        assert page["next_before"] == page["items"][-1]["id"]
        params["before"] = page["next_before"]
    assert walked == everything
    assert pages >= len(everything) // 3
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": 0}, {"before": "x"}):
        assert_problem(await http.get("/api/v1/audit", params=bad), 400)


# -- CORS -------------------------------------------------------------------------------------


async def test_cors_is_closed_by_default(http: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://admin.example.com"}
    r = await http.get("/api/v1/groups", headers=origin)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    preflight = await http.options(
        "/api/v1/groups",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert_problem(preflight, 403, "CORS")
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_for_configured_origins() -> None:
    cfg = admin_config(cors_origins=["https://admin.example.com"])
    assert cfg.server.cors_origins == ("https://admin.example.com",)
    async with (
        open_server(cfg, host="127.0.0.1", ws_port=0, http_port=0) as s,
        httpx.AsyncClient(base_url=s.http_url, headers=bearer(ADMIN)) as http,
    ):
        allowed = {"Origin": "https://admin.example.com"}
        r = await http.get("/api/v1/groups/1", headers=allowed)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://admin.example.com"
        assert r.headers["vary"] == "Origin"
        preflight = await http.options(
            "/api/v1/groups/1",
            headers={
                **allowed,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204 and preflight.content == b""
        assert preflight.headers["access-control-allow-origin"] == "https://admin.example.com"
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        assert "Authorization" in preflight.headers["access-control-allow-headers"]
        # Errors carry the header too, so the browser can read them.
        unauth = await http.get("/api/v1/groups", headers={**allowed, "Authorization": ""})
        assert_problem(unauth, 401)
        assert unauth.headers["access-control-allow-origin"] == "https://admin.example.com"
        # Other origins still get nothing.
        other = {"Origin": "https://evil.example.net"}
        r = await http.get("/api/v1/groups/1", headers=other)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        assert_problem(await http.options("/api/v1/groups/1", headers=other), 403)


# -- conversations ----------------------------------------------------------------------------


@dataclass
class World:
    srv: RunningServer
    ids: dict[str, str]
    vera_frames: list[dict[str, Any]]
    alice_frames: list[dict[str, Any]]


@pytest.fixture
async def world(srv: RunningServer) -> World:
    """Four conversations: closed (with a survey), active, out of hours, abandoned."""
    url = srv.ws_url
    ids: dict[str, str] = {}
    async with (
        connect_tcp(f"{url}/ws/operator") as alice,
        connect_tcp(f"{url}/ws/operator") as bruno,
    ):
        await login(alice, TOK_ALICE)
        async with connect_tcp(f"{url}/ws/visitor") as vera:
            ids["closed"] = (await start(vera, name="Vera Lopez", email="Vera@Example.com"))[
                "conversation_id"
            ]
            offer = await alice.expect("offer")
            await alice.send("accept", conversation_id=offer["conversation"]["id"])
            await vera.expect("assigned")
            await vera.expect("message")
            await vera.send("message", client_id="v1", text="Where is my order?")
            await vera.expect("ack", client_id="v1")
            await vera.send("end")
            await vera.expect("ended", by="visitor")
            await vera.expect("survey")
            await vera.send("survey", answers={"rating": 5, "comment": "quick"})
            await vera.expect("closed")
            await alice.until("closed")
        await alice.send("status", status="paused")
        await alice.expect("status", status="paused")

        await login(bruno, TOK_BRUNO)
        async with connect_tcp(f"{url}/ws/visitor") as bob:
            ids["active"] = (await start(bob, 27, name="Bob 50%_off", email="bob@corp.test"))[
                "conversation_id"
            ]
            offer = await bruno.expect("offer")
            await bruno.send("accept", conversation_id=offer["conversation"]["id"])
            await bob.expect("assigned")
        async with connect_tcp(f"{url}/ws/visitor") as olga:
            ids["out_of_hours"] = (await start(olga, 26, name="Olga"))["conversation_id"]
            await olga.expect("out_of_hours")
        async with connect_tcp(f"{url}/ws/visitor") as zed:
            ids["abandoned"] = (await start(zed, 25, name="Zed"))["conversation_id"]
            await zed.expect("queued")
            await zed.send("end")
            await zed.expect("ended", by="visitor")
            await zed.expect("closed")
        return World(srv, ids, vera.received, alice.received)


async def _all_pages(http: httpx.AsyncClient, **params: Any) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await http.get("/api/v1/conversations", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 20


async def test_list_conversations_with_filters(world: World, http: httpx.AsyncClient) -> None:
    ids = world.ids
    everything = (await http.get("/api/v1/conversations")).json()
    assert everything["next_cursor"] is None
    items = everything["items"]
    order = [ids["abandoned"], ids["out_of_hours"], ids["active"], ids["closed"]]
    assert [c["id"] for c in items] == order
    by_id = {c["id"]: c for c in items}
    created = [by_id[i]["created_at"] for i in reversed(order)]
    assert created == sorted(created)

    closed = by_id[ids["closed"]]
    assert closed["status"] == "closed" and closed["service_id"] == 25 and closed["group_id"] == 1
    assert closed["operator_id"] == 1 and closed["operator_name"] == "Alice"
    assert closed["visitor"] == {"name": "Vera Lopez", "email": "Vera@Example.com"}
    assert closed["ended_by"] == "visitor"
    assert closed["created_at"] <= closed["answered_at"] <= closed["ended_at"]
    assert re.fullmatch(r"\d{4}-\d{6}", closed["ticket"])
    assert set(closed) == {
        "id",
        "ticket",
        "service_id",
        "status",
        "group_id",
        "operator_id",
        "operator_name",
        "visitor",
        "created_at",
        "answered_at",
        "ended_at",
        "ended_by",
        "last_seq",
        "waited",
        "channel",
    }
    # The WebChat's conversations came through no messaging channel.
    assert closed["channel"] is None
    # The protocol's one summary shape: the history's last seq, and the wait until answered.
    assert closed["last_seq"] > 3
    answered_at, created_at = (
        datetime.fromisoformat(closed[k].replace("Z", "+00:00"))
        for k in ("answered_at", "created_at")
    )
    assert closed["waited"] == round((answered_at - created_at).total_seconds(), 3)
    ooh = by_id[ids["out_of_hours"]]
    assert ooh["status"] == "out_of_hours" and ooh["group_id"] is None
    assert ooh["answered_at"] is None and ooh["operator_id"] is None
    abandoned = by_id[ids["abandoned"]]
    assert abandoned["status"] == "abandoned" and abandoned["answered_at"] is None
    assert abandoned["ended_by"] == "visitor" and abandoned["ended_at"] is not None

    async def ids_for(**params: Any) -> list[str]:
        r = await http.get("/api/v1/conversations", params=params)
        assert r.status_code == 200, r.text
        return [c["id"] for c in r.json()["items"]]

    for status in ("closed", "active", "out_of_hours", "abandoned"):
        assert await ids_for(status=status) == [ids[status]]
    assert await ids_for(status="queued") == []
    assert await ids_for(service_id=25) == [ids["abandoned"], ids["closed"]]
    assert await ids_for(service_id=27) == [ids["active"]]
    assert await ids_for(service_id=99) == []
    assert await ids_for(group_id=1) == [ids["abandoned"], ids["closed"]]
    assert await ids_for(group_id=2) == [ids["active"]]
    assert await ids_for(operator_id=1) == [ids["closed"]]
    assert await ids_for(operator_id=2) == [ids["active"]]
    assert await ids_for(operator_id=3) == []
    active_at = by_id[ids["active"]]["created_at"]
    ooh_at = by_id[ids["out_of_hours"]]["created_at"]
    assert await ids_for(**{"from": active_at}) == order[:3]
    assert await ids_for(to=ooh_at) == [ids["active"], ids["closed"]]
    assert await ids_for(**{"from": active_at, "to": ooh_at}) == [ids["active"]]
    # An offset time means the same instant.
    at = datetime.fromisoformat(active_at.replace("Z", "+00:00"))
    assert (
        await ids_for(**{"from": at.astimezone(timezone(timedelta(hours=-3))).isoformat()})
        == order[:3]
    )
    assert await ids_for(status="closed", service_id=25, operator_id=1) == [ids["closed"]]
    assert await ids_for(status="closed", service_id=27) == []

    # Search: visitor name, e-mail, ticket; case-insensitive; % and _ are literal.
    assert await ids_for(q="vera") == [ids["closed"]]
    assert await ids_for(q="LOPEZ") == [ids["closed"]]
    assert await ids_for(q="example.COM") == [ids["closed"]]
    assert await ids_for(q="corp.test") == [ids["active"]]
    assert await ids_for(q="50%_") == [ids["active"]]
    assert await ids_for(q="%") == [ids["active"]]
    assert await ids_for(q="_") == [ids["active"]]
    assert await ids_for(q="o_g") == []
    ticket = by_id[ids["out_of_hours"]]["ticket"]
    assert await ids_for(q=ticket) == [ids["out_of_hours"]]
    assert await ids_for(q="nobody-at-all") == []
    assert await ids_for(q="") == order

    # The operator role may list conversations too.
    async with httpx.AsyncClient(base_url=world.srv.http_url, headers=bearer(OPERATOR)) as desk:
        r = await desk.get("/api/v1/conversations", params={"status": "active"})
        assert r.status_code == 200 and [c["id"] for c in r.json()["items"]] == [ids["active"]]


async def test_conversation_pages(world: World, http: httpx.AsyncClient) -> None:
    everything = [c["id"] for c in (await http.get("/api/v1/conversations")).json()["items"]]
    first = (await http.get("/api/v1/conversations", params={"limit": 2})).json()
    assert [c["id"] for c in first["items"]] == everything[:2]
    assert first["next_cursor"] is not None
    for limit in (1, 2, 3, 4, 5):
        walked, pages = await _all_pages(http, limit=limit)
        assert [c["id"] for c in walked] == everything, limit
        assert pages == len(everything) // limit + 1
    walked, _ = await _all_pages(http, limit=1, service_id=25)
    assert [c["id"] for c in walked] == [world.ids["abandoned"], world.ids["closed"]]


async def test_report_over_http(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.srv.http_url, headers=bearer(SUPERVISOR)) as boss:
        r = await boss.get("/api/v1/reports")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {
        "start", "end", "threshold_seconds", "total", "services", "groups", "operators",
    }  # fmt: skip
    start_at = datetime.fromisoformat(body["start"].replace("Z", "+00:00"))
    end_at = datetime.fromisoformat(body["end"].replace("Z", "+00:00"))
    assert end_at - start_at == timedelta(days=1) and body["threshold_seconds"] == 20
    total = body["total"]
    # Closed and active were answered within seconds; one abandoned; one out of hours.
    assert {k: total[k] for k in ("offered", "answered", "abandoned", "out_of_hours")} == {
        "offered": 3,
        "answered": 2,
        "abandoned": 1,
        "out_of_hours": 1,
    }
    assert total["service_level"] == round(2 / 3, 4)
    assert 0 <= total["asa_seconds"] < 5 and 0 <= total["aht_seconds"] < 5
    services = {s["service_id"]: s for s in body["services"]}
    assert sorted(services) == [25, 26, 27]
    assert (services[25]["offered"], services[25]["answered"], services[25]["abandoned"]) == (
        2,
        1,
        1,
    )
    assert services[26]["out_of_hours"] == 1 and services[26]["service_level"] is None
    assert services[27]["answered"] == 1 and services[27]["aht_seconds"] is None  # still active
    groups = {g["group_id"]: g for g in body["groups"]}
    assert sorted(groups) == [1, 2] and groups[1]["offered"] == 2 and groups[2]["offered"] == 1


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"status": "bogus"}, "unknown status 'bogus'"),
        ({"limit": 0}, "limit must be between 1 and 200"),
        ({"limit": 201}, "limit must be between 1 and 200"),
        ({"limit": "ten"}, "limit must be a whole number"),
        ({"service_id": "x"}, "service_id must be a whole number"),
        ({"group_id": 0}, "group_id must be between"),
        ({"operator_id": -1}, "operator_id must be between"),
        ({"from": "not-a-date"}, "from must be an ISO 8601 date-time"),
        ({"to": "2026-13-01"}, "to must be an ISO 8601 date-time"),
        ({"cursor": "garbage"}, "cursor is not one this API gave"),
        ({"cursor": "2026-11-25T12:00:00Z"}, "cursor is not one this API gave"),
        ({"cursor": "2026-11-25T12:00:00|c1"}, "cursor is not one this API gave"),
        ({"q": "x" * 201}, "q is limited to 200 characters"),
    ],
)
async def test_bad_conversation_queries(
    http: httpx.AsyncClient, params: dict[str, Any], detail: str
) -> None:
    problem = assert_problem(await http.get("/api/v1/conversations", params=params), 400, detail)
    assert problem["title"] == "Bad Request"


async def test_conversation_detail_and_transcript(world: World, http: httpx.AsyncClient) -> None:
    ids = world.ids
    listed = {c["id"]: c for c in (await http.get("/api/v1/conversations")).json()["items"]}
    detail = await http.get(f"/api/v1/conversations/{ids['closed']}")
    assert detail.status_code == 200
    assert detail.json() == {
        "conversation": listed[ids["closed"]],
        "survey": {"rating": 5, "comment": "quick"},
        "emails": [],
        "survey_status": "answered",
        "survey_link": None,
    }
    active = (await http.get(f"/api/v1/conversations/{ids['active']}")).json()
    assert active == {
        "conversation": listed[ids["active"]],
        "survey": None,
        "emails": [],
        "survey_status": None,
        "survey_link": None,
    }

    transcript = await http.get(f"/api/v1/conversations/{ids['closed']}/transcript")
    assert transcript.status_code == 200
    body = transcript.json()
    assert body["conversation"] == listed[ids["closed"]]
    events = body["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events] == [
        "assigned",
        "message",
        "message",
        "ended",
        "survey",
        "closed",
    ]
    assert all(e["conversation_id"] == ids["closed"] for e in events)
    assert events[2]["text"] == "Where is my order?"
    assert events[2]["author"] == {"kind": "visitor", "name": "Vera Lopez"}
    # Exactly the frames the participants were sent (each gets an ack for its own message).
    vera_got = [f for f in world.vera_frames if "seq" in f and f["type"] != "ack"]
    assert vera_got == [
        e for e in events if e.get("author") != {"kind": "visitor", "name": "Vera Lopez"}
    ]
    alice_got = [
        f for f in world.alice_frames if f.get("conversation_id") == ids["closed"] and "seq" in f
    ]
    assert alice_got == [e for e in events if e["type"] != "survey"]

    assert body["next_after"] is None  # one page holds it all
    ooh = (await http.get(f"/api/v1/conversations/{ids['out_of_hours']}/transcript")).json()
    assert [(e["type"], e["seq"]) for e in ooh["events"]] == [("out_of_hours", 1)]
    assert ooh["events"][0]["message"] == "We are closed."

    for path in (
        "/api/v1/conversations/nope",
        "/api/v1/conversations/nope/transcript",
        "/api/v1/conversations/" + "x" * 100,
    ):
        assert_problem(await http.get(path), 404)
    async with httpx.AsyncClient(base_url=world.srv.http_url, headers=bearer(OPERATOR)) as desk:
        assert (
            await desk.get(f"/api/v1/conversations/{ids['closed']}/transcript")
        ).status_code == 200


async def test_a_long_transcript_comes_a_page_at_a_time(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    """``after`` and ``limit`` (200 by default, 1000 at most) page the events; ``next_after``
    says where the next page starts, and is null on the last page — also when the last page
    happens to be full."""
    conv = make_conversation(1, Status.CLOSED)
    events = [
        StoredEvent(conv.id, seq, "message", "both", json.dumps({"seq": seq, "text": f"m{seq}"}))
        for seq in range(1, 451)
    ]
    conv.last_seq = 450
    await srv.hub.store.write(Write(conversation=conv, events=events))
    url = "/api/v1/conversations/c1/transcript"

    async def page(**params: int) -> tuple[list[int], int | None]:
        response = await http.get(url, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["conversation"]["id"] == "c1"
        return [e["seq"] for e in body["events"]], body["next_after"]

    assert await page() == (list(range(1, 201)), 200)
    assert await page(after=200) == (list(range(201, 401)), 400)
    assert await page(after=400) == (list(range(401, 451)), None)
    assert await page(after=250) == (list(range(251, 451)), None)  # exactly full: the last
    assert await page(after=0, limit=1000) == (list(range(1, 451)), None)
    assert await page(after=10, limit=3) == ([11, 12, 13], 13)
    assert await page(after=450) == ([], None)
    for params, detail in (
        ({"limit": 0}, "limit must be between 1 and 1000"),
        ({"limit": 1001}, "limit must be between 1 and 1000"),
        ({"after": -1}, "after must be between 0 and 2147483647"),
        ({"after": "ten"}, "after must be a whole number"),
    ):
        assert_problem(await http.get(url, params=params), 400, detail)


# -- resume (F4) ------------------------------------------------------------------------------


async def test_resume_an_out_of_hours_conversation(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    url = srv.ws_url
    async with connect_tcp(f"{url}/ws/visitor") as olga:
        cid = (await start(olga, 26, name="Olga"))["conversation_id"]
        await olga.expect("out_of_hours")
        await olga.send("message", client_id="m1", text="Call me back, please")
        await olga.expect("ack", client_id="m1")

        path = f"/api/v1/conversations/{cid}/resume"
        assert_problem(await http.post(path, json={"operator_id": 1}), 409, "not signed in")
        assert_problem(await http.post(path, json={"operator_id": 99}), 409)
        assert_problem(await http.post(path, json={}), 422, "operator_id")
        assert_problem(await http.post(path, json={"operator_id": 1, "x": 1}), 422, "unknown field")
        assert_problem(
            await http.post(path, content=b"{", headers={"content-type": "application/json"}), 400
        )
        assert_problem(
            await http.post("/api/v1/conversations/nope/resume", json={"operator_id": 1}), 404
        )

        async with connect_tcp(f"{url}/ws/operator") as alice:
            await login(alice, TOK_ALICE, available=False)
            async with httpx.AsyncClient(base_url=srv.http_url, headers=bearer(SUPERVISOR)) as boss:
                r = await boss.post(path, json={"operator_id": 1})
            assert r.status_code == 200, r.text
            out = r.json()  # the conversation as the resume left it
            assert out["id"] == cid and out["service_id"] == 26
            assert out["status"] == "active" and out["operator_id"] == 1

            assigned = await alice.until("assigned")
            assert assigned["conversation_id"] == cid
            assert assigned["operator"] == {"id": 1, "name": "Alice"}
            assert assigned["conversation"]["visitor"] == {"name": "Olga"}
            # The operator got the history first: the visitor's message.
            history = [f for f in alice.received if f.get("conversation_id") == cid]
            assert [f["type"] for f in history] == ["message", "assigned"]
            assert history[0]["text"] == "Call me back, please"
            seen = await olga.expect("assigned")
            assert seen == assigned

            await alice.send("message", conversation_id=cid, client_id="a1", text="Hi Olga")
            assert (await olga.expect("message"))["text"] == "Hi Olga"

            # No longer out of hours.
            assert_problem(await http.post(path, json={"operator_id": 1}), 409, "is active")
            conv = (await http.get(f"/api/v1/conversations/{cid}")).json()["conversation"]
            assert conv["status"] == "active" and conv["operator_id"] == 1
            assert conv["group_id"] == 3 and conv["answered_at"] is not None

    # A queued conversation is not out of hours either.
    async with connect_tcp(f"{url}/ws/visitor") as zed, connect_tcp(f"{url}/ws/operator") as carla:
        await login(carla, TOK_CARLA, available=False)
        zid = (await start(zed, 25, name="Zed"))["conversation_id"]
        await zed.expect("queued")
        r = await http.post(f"/api/v1/conversations/{zid}/resume", json={"operator_id": 3})
        assert_problem(r, 409, f"conversation {zid} is queued, not out_of_hours")


async def test_resume_after_the_visitor_left(srv: RunningServer, http: httpx.AsyncClient) -> None:
    async with connect_tcp(f"{srv.ws_url}/ws/visitor") as olga:
        started = await start(olga, 26, name="Olga")
        await olga.expect("out_of_hours")
    cid = started["conversation_id"]
    await eventually(lambda: cid not in srv.hub.conversations)  # the actor is freed
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as bruno:
        await login(bruno, TOK_BRUNO, available=False)
        r = await http.post(f"/api/v1/conversations/{cid}/resume", json={"operator_id": 2})
        assert r.status_code == 200 and r.json()["operator_id"] == 2
        assigned = await bruno.until("assigned")
        assert assigned["conversation_id"] == cid and assigned["operator"]["name"] == "Bruno"
        # The visitor finds the operator when they come back.
        async with connect_tcp(f"{srv.ws_url}/ws/visitor") as back:
            await back.send("resume", token=started["token"], last_seq=1)
            resumed = await back.expect("resumed")
            assert resumed["status"] == "active"
            assert (await back.expect("assigned"))["seq"] == assigned["seq"]


# -- queues -----------------------------------------------------------------------------------


async def test_queue_snapshot(srv: RunningServer, http: httpx.AsyncClient) -> None:
    url = srv.ws_url

    async def snapshot() -> dict[int, dict[str, Any]]:
        r = await http.get("/api/v1/queues")
        assert r.status_code == 200
        return {q["group_id"]: q for q in r.json()}

    empty = await snapshot()
    assert empty[3] == {
        "group_id": 3,
        "name": "Night",
        "waiting": 0,
        "longest_wait_seconds": 0.0,
        "operators": {"available": 0, "busy": 0, "paused": 0},
    }
    async with (
        connect_tcp(f"{url}/ws/operator") as alice,
        connect_tcp(f"{url}/ws/operator") as bruno,
        connect_tcp(f"{url}/ws/operator") as carla,
    ):
        await login(alice, TOK_ALICE)
        await login(bruno, TOK_BRUNO)
        await login(carla, TOK_CARLA, available=False)
        idle = await snapshot()
        assert [idle[g]["operators"] for g in (1, 2, 3)] == [
            {"available": 1, "busy": 0, "paused": 1},
            {"available": 2, "busy": 0, "paused": 0},
            {"available": 0, "busy": 0, "paused": 0},
        ]
        assert all(idle[g]["waiting"] == 0 for g in (1, 2, 3))

        await alice.send("status", status="paused")
        await alice.expect("status", status="paused")
        async with (
            connect_tcp(f"{url}/ws/visitor") as v1,
            connect_tcp(f"{url}/ws/visitor") as v2,
            connect_tcp(f"{url}/ws/visitor") as v3,
            connect_tcp(f"{url}/ws/visitor") as v4,
        ):
            await start(v1, 27, name="One")
            offer = await bruno.expect("offer")
            await bruno.send("accept", conversation_id=offer["conversation"]["id"])
            await v1.expect("assigned")
            two_started = trio.current_time()
            await start(v2, 25, name="Two")
            await v2.expect("queued")
            await trio.sleep(0.3)  # Two's wait grows (the figure measured, not a wait for it)
            await start(v3, 25, name="Three")
            await v3.expect("queued")
            await start(v4, 27, name="Four")
            await v4.expect("queued")
            busy = await snapshot()
            waited = trio.current_time() - two_started  # at most this, on the same clock
            assert busy[1]["waiting"] == 2 and busy[2]["waiting"] == 1 and busy[3]["waiting"] == 0
            assert busy[1]["operators"] == {"available": 0, "busy": 0, "paused": 2}
            assert busy[2]["operators"] == {"available": 0, "busy": 1, "paused": 1}
            # The longest wait is the oldest visitor's: Two's in group 1, Four's in group 2.
            assert 0.3 <= busy[1]["longest_wait_seconds"] <= waited + 0.001  # (rounded to ms)
            assert 0 <= busy[2]["longest_wait_seconds"] < busy[1]["longest_wait_seconds"]
            assert busy[3]["longest_wait_seconds"] == 0.0
            assert [busy[g]["name"] for g in (1, 2, 3)] == ["Support", "Billing", "Night"]

            # Carla becomes available: she takes Two, the longest waiting, and is then full.
            await carla.send("status", status="available")
            offer = await carla.until("offer")
            assert offer["conversation"]["visitor"]["name"] == "Two"
            after = await snapshot()
            assert after[1]["waiting"] == 1
            assert after[1]["operators"] == {"available": 0, "busy": 1, "paused": 1}
            assert after[1]["longest_wait_seconds"] < busy[1]["longest_wait_seconds"]
    gone = await snapshot()
    assert all(gone[g]["operators"] == {"available": 0, "busy": 0, "paused": 0} for g in (1, 2, 3))


# -- reports ----------------------------------------------------------------------------------


#: The files sent, in the total and the service figures (none in these reports; sent ones:
#: tests/test_attachments.py).
#: A service's or the total's figures beyond the counts, when no file was sent and no
#: conversation met a chatbot.
NO_FILES = {
    "files_sent": 0,
    "file_bytes": 0,
    "bot": {
        "conversations": 0,
        "contained": 0,
        "containment": None,
        "handoffs": {},
        "dropoffs": {},
    },
}


def _figures(
    offered: int,
    answered: int,
    abandoned: int,
    out_of_hours: int,
    service_level: float | None,
    asa: float | None,
    aht: float | None,
) -> dict[str, Any]:
    return {
        "offered": offered,
        "answered": answered,
        "abandoned": abandoned,
        "out_of_hours": out_of_hours,
        "service_level": service_level,
        "asa_seconds": asa,
        "aht_seconds": aht,
    }


async def test_reports_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """Answered at 4 s and 25 s, handled 96 s and 100 s; one abandoned after 10 s in the queue;
    one out of hours. Everything through the Quart test client, in virtual time."""
    cfg = admin_config()
    async with open_memory_gateway(cfg) as gw:
        hub = gw.hub
        configuration = Configuration(hub, hub.store, cfg.items, hub.clock.now)
        app = create_app(hub, make_registry(hub), configuration)
        client = app.test_client()
        t0 = trio.current_time()
        began = hub.clock.now()

        async def at(seconds: float) -> None:
            await trio.sleep_until(t0 + seconds)

        async with (
            connect_memory(gw, "/ws/operator") as alice,
            connect_memory(gw, "/ws/visitor") as v1,
            connect_memory(gw, "/ws/visitor") as v2,
            connect_memory(gw, "/ws/visitor") as v3,
            connect_memory(gw, "/ws/visitor") as v4,
        ):
            await login(alice, TOK_ALICE)
            c1 = (await start(v1, 25, name="One"))["conversation_id"]
            await alice.expect("offer")
            await at(4)
            await alice.send("accept", conversation_id=c1)
            await v1.expect("assigned")
            c2 = (await start(v2, 25, name="Two"))["conversation_id"]
            await alice.until("offer")
            await at(29)
            await alice.send("accept", conversation_id=c2)
            await v2.expect("assigned")
            await start(v3, 27, name="Three")  # Alice is full: it waits
            await v3.expect("queued")
            await at(39)
            await v3.send("end")
            await v3.expect("ended", by="visitor")
            await v3.expect("closed")
            await start(v4, 26, name="Four")
            await v4.expect("out_of_hours")
            await at(100)
            await alice.send("end", conversation_id=c1)
            await v1.until("survey")
            await v1.send("survey_skip")
            await v1.expect("closed")
            await at(129)
            await v2.send("end")
            await v2.until("survey")
            await v2.send("survey", answers={"rating": 4})
            await v2.expect("closed")
            await at(130)

            headers = bearer(SUPERVISOR)
            r = await client.get("/api/v1/reports", headers=headers)
            assert r.status_code == 200
            body = await r.get_json()
            end = hub.clock.now()
            assert body["end"] == end.isoformat().replace("+00:00", "Z")
            assert body["start"] == (end - timedelta(days=1)).isoformat().replace("+00:00", "Z")
            assert body["threshold_seconds"] == 20
            support = _figures(2, 2, 0, 0, 0.5, 14.5, 98.0)
            billing = _figures(1, 0, 1, 0, 0.0, None, None)
            assert body["total"] == {**_figures(3, 2, 1, 1, 0.3333, 14.5, 98.0), **NO_FILES}
            assert body["services"] == [
                {**support, **NO_FILES, "service_id": 25},
                {**_figures(0, 0, 0, 1, None, None, None), **NO_FILES, "service_id": 26},
                {**billing, **NO_FILES, "service_id": 27},
            ]
            assert body["groups"] == [{**support, "group_id": 1}, {**billing, "group_id": 2}]

            # The threshold is inclusive: 25 s answers count within 25 s.
            r = await client.get("/api/v1/reports?threshold=25", headers=headers)
            body = await r.get_json()
            assert body["threshold_seconds"] == 25 and body["total"]["service_level"] == 0.6667
            assert body["services"][0]["service_level"] == 1.0

            # The period is [from, to): only the conversation created at 29 s.
            def iso(seconds: float) -> str:
                return (began + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

            r = await client.get(
                "/api/v1/reports",
                query_string={"from": iso(5), "to": iso(39)},
                headers=headers,
            )
            body = await r.get_json()
            assert body["start"] == iso(5) and body["end"] == iso(39)
            assert body["total"] == {**billing, **NO_FILES}
            assert [s["service_id"] for s in body["services"]] == [27]
            r = await client.get(
                "/api/v1/reports", query_string={"from": iso(39), "to": iso(40)}, headers=headers
            )
            assert (await r.get_json())["total"] == {
                **_figures(0, 0, 0, 1, None, None, None),
                **NO_FILES,
            }

            for query in (
                {"from": iso(40), "to": iso(39)},
                {"from": iso(5), "to": iso(5)},
                {"threshold": 0},
                {"threshold": "x"},
                {"to": "yesterday"},
            ):
                r = await client.get("/api/v1/reports", query_string=query, headers=headers)
                assert r.status_code == 400
                assert r.content_type == "application/problem+json"
            r = await client.get("/api/v1/reports", headers=bearer(OPERATOR))
            assert r.status_code == 403


def _conv(
    n: int,
    status: Status,
    *,
    created: float,
    answered: float | None = None,
    ended: float | None = None,
    group: int | None = 1,
    service: int = 25,
) -> Conversation:
    epoch = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else epoch + timedelta(seconds=seconds)

    return make_conversation(
        n,
        status,
        at=at(created),
        visitor=f"V{n}",
        service_id=service,
        group_id=group,
        answered_at=at(answered),
        ended_at=at(ended),
    )


def test_report_figures() -> None:
    conversations = [
        _conv(1, Status.CLOSED, created=0, answered=10, ended=70),  # 10 s, 60 s
        _conv(2, Status.CLOSED, created=0, answered=20, ended=140),  # 20 s: within 20
        _conv(3, Status.ACTIVE, created=0, answered=30.5),  # not ended: no handle time
        _conv(4, Status.ABANDONED, created=0, ended=50),
        _conv(5, Status.QUEUED, created=0),  # offered, still waiting
        _conv(6, Status.OUT_OF_HOURS, created=0, group=None),
        # Answered, transferred back to a queue, then left: answered, not abandoned.
        _conv(7, Status.ABANDONED, created=0, answered=5, ended=25, group=2, service=27),
        _conv(8, Status.OFFERED, created=0, group=2, service=27),
    ]
    result = report(conversations, 20.0)
    assert result.threshold == 20.0
    assert result.total == {
        "offered": 7,
        "answered": 4,
        "abandoned": 1,
        "out_of_hours": 1,
        # 3 answered within 20 s / (4 answered + 1 abandoned): the 2 still waiting count in
        # neither.
        "service_level": 0.6,
        "asa_seconds": round((10 + 20 + 30.5 + 5) / 4, 3),
        "aht_seconds": round((60 + 120 + 20) / 3, 3),
        **NO_FILES,
    }
    assert result.services == {
        25: {**_figures(5, 3, 1, 1, 0.5, 20.167, 90.0), **NO_FILES},
        27: {**_figures(2, 1, 0, 0, 1.0, 5.0, 20.0), **NO_FILES},
    }
    assert result.groups == {
        1: _figures(5, 3, 1, 0, 0.5, 20.167, 90.0),
        2: _figures(2, 1, 0, 0, 1.0, 5.0, 20.0),
    }
    empty = report([], 20.0)
    assert empty.total == {**_figures(0, 0, 0, 0, None, None, None), **NO_FILES}
    assert empty.services == {} and empty.groups == {}


# -- OpenAPI ----------------------------------------------------------------------------------


async def test_openapi_document_lists_every_route(srv: RunningServer) -> None:
    app = create_app(srv.hub, make_registry(srv.hub), srv.configuration)
    client = app.test_client()
    r = await client.get("/openapi.json")
    assert r.status_code == 200 and r.mimetype == "application/json"
    doc = await r.get_json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "Omni admin API"
    bearer_scheme = doc["components"]["securitySchemes"]["bearer"]
    assert bearer_scheme["type"] == "http" and bearer_scheme["scheme"] == "bearer"

    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(\w+)>", r"{\1}", rule.rule)
        served |= {(m.lower(), path) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/api/v1")}
    assert served == documented
    declared = {(r.method.lower(), r.path) for r in app.extensions["omni_api"].routes}
    assert documented <= declared and ("get", "/healthz") in declared
    # Every kind of resource, and every other endpoint, is there.
    for kind in ("services", "groups", "schedules", "operators", "api-tokens", "users"):
        base = f"/api/v1/{kind}"
        assert set(doc["paths"][base]) == {"get", "post"}
        assert set(doc["paths"][base + "/{key}"]) == {"get", "put", "delete"}
    assert set(doc["paths"]["/api/v1/parameters"]) == {"get", "put"}
    for path in (
        "/api/v1/audit",
        "/api/v1/conversations",
        "/api/v1/conversations/{id}",
        "/api/v1/conversations/{id}/transcript",
        "/api/v1/queues",
        "/api/v1/reports",
    ):
        assert set(doc["paths"][path]) == {"get"}
    assert set(doc["paths"]["/api/v1/conversations/{id}/resume"]) == {"post"}
    assert set(doc["paths"]["/api/v1/session"]) == {"get", "post", "delete"}
    assert set(doc["paths"]["/api/v1/session/password"]) == {"post"}
    assert set(doc["paths"]["/api/v1/users/{key}/password"]) == {"put"}

    operation_ids = []
    schemas = doc["components"]["schemas"]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            operation_ids.append(op["operationId"])
            assert op["summary"] and op["tags"]
            assert op["responses"], (method, path)
            success = [c for c in op["responses"] if c.startswith("2")]
            assert len(success) == 1
            for code, response in op["responses"].items():
                assert response["description"]
                if not code.startswith("2"):
                    schema = response["content"]["application/problem+json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Problem"}
            refs = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(op))
            assert all(name in schemas for name in refs)
            # Signing in is how a person gets a bearer token: the one open API route.
            if path.startswith("/api/v1") and (method, path) != ("post", "/api/v1/session"):
                assert op["security"] == [{"bearer": []}], (method, path)
                assert {"401", "403"} <= set(op["responses"])
                assert op["description"].startswith("Roles: ")
            else:
                assert "security" not in op
            for name in re.findall(r"{(\w+)}", path):
                assert {"name": name, "in": "path", "required": True}.items() <= next(
                    p for p in op["parameters"] if p["name"] == name
                ).items()
    assert len(operation_ids) == len(set(operation_ids))

    assert doc["paths"]["/api/v1/groups"]["post"]["responses"]["201"]
    body = doc["paths"]["/api/v1/services"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceInput"
    }
    assert "links" in schemas["ServiceInput"]["required"]
    assert doc["paths"]["/api/v1/groups/{key}"]["delete"]["responses"]["204"] == {
        "description": "Done"
    }
    roles = {
        ("get", "/api/v1/api-tokens"): "Roles: admin",
        ("get", "/api/v1/groups"): "Roles: admin, supervisor",
        ("put", "/api/v1/groups/{key}"): "Roles: admin",
        ("get", "/api/v1/conversations"): "Roles: admin, operator, supervisor",
        ("get", "/api/v1/reports"): "Roles: admin, supervisor",
    }
    for (method, path), description in roles.items():
        assert doc["paths"][path][method]["description"] == description
    conversation_params = {
        p["name"] for p in doc["paths"]["/api/v1/conversations"]["get"]["parameters"]
    }
    assert conversation_params == {
        "status",
        "service_id",
        "group_id",
        "operator_id",
        "from",
        "to",
        "q",
        "limit",
        "cursor",
    }

    docs = await client.get("/docs")
    assert docs.status_code == 200 and docs.mimetype == "text/html"
    html = await docs.get_data(as_text=True)
    assert html.lstrip().lower().startswith("<!doctype html>") and "/openapi.json" in html


async def test_openapi_and_docs_over_http(srv: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=srv.http_url) as anon:
        r = await anon.get("/openapi.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json()["openapi"] == "3.1.0"
        docs = await anon.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["content-type"] == "text/html; charset=utf-8"


async def test_crud_through_the_quart_test_client(srv: RunningServer) -> None:
    app = create_app(srv.hub, make_registry(srv.hub), srv.configuration)
    client = app.test_client()
    headers = bearer(ADMIN)
    r = await client.post("/api/v1/groups", json={"id": 5, "name": "Nights"}, headers=headers)
    assert r.status_code == 201 and r.headers["Location"] == "/api/v1/groups/5"
    assert await r.get_json() == {"id": 5, "name": "Nights"}
    r = await client.get("/api/v1/groups", headers=headers)
    assert [g["id"] for g in await r.get_json()] == [1, 2, 3, 5]
    r = await client.post("/api/v1/groups", json={"id": 5, "name": "Again"}, headers=headers)
    assert r.status_code == 409 and r.content_type == "application/problem+json"
    problem = await r.get_json()
    assert set(problem) == PROBLEM_KEYS and problem["status"] == 409
    assert problem["detail"] == "group 5 exists; PUT /api/v1/groups/5 to change it"
    assert problem["type"] == "https://omni.dev/problems/conflict"
    r = await client.put("/api/v1/groups/5", json={"id": 6, "name": "x"}, headers=headers)
    assert r.status_code == 422 and (await r.get_json())["detail"] == "the body's id must be 5"
    r = await client.post(
        "/api/v1/groups", data="{", headers={**headers, "Content-Type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.post(
        "/api/v1/groups", data="<group/>", headers={**headers, "Content-Type": "application/xml"}
    )
    assert r.status_code == 415
    big = {"id": 8, "name": "x" * (1024 * 1024)}
    r = await client.post("/api/v1/groups", json=big, headers=headers)
    assert r.status_code == 413 and r.content_type == "application/problem+json"
    assert (await r.get_json())["title"] == "Content Too Large"
    r = await client.delete("/api/v1/groups/5", headers=headers)
    assert r.status_code == 204
    r = await client.get("/api/v1/groups/5")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == 'Bearer realm="omni"'
    assert srv.configuration.get("groups", "5") is None
    assert 5 not in srv.hub.directory.groups


# -- operations endpoints ---------------------------------------------------------------------

OPS_TOKEN = "ops-metrics-Tq8Wz2Lx5Kp9Rv3N"
OPS_PATHS = ("/metrics", "/openapi.json", "/docs")


@asynccontextmanager
async def ops_server(**server: Any) -> AsyncIterator[tuple[RunningServer, httpx.AsyncClient]]:
    async with (
        open_server(admin_config(**server), host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(timeout=10) as http,
    ):
        yield srv, http


async def _assert_ops_answer(http: httpx.AsyncClient, base: str, **headers: str) -> None:
    metrics = await http.get(f"{base}/metrics", headers=headers)
    assert metrics.status_code == 200 and "omni_connections" in metrics.text
    document = await http.get(f"{base}/openapi.json", headers=headers)
    assert "/api/v1/conversations/{id}/transcript" in document.json()["paths"]
    docs = await http.get(f"{base}/docs", headers=headers)
    assert docs.status_code == 200 and "Omni admin API" in docs.text


async def test_ops_bind_serves_the_operations_endpoints_there_only() -> None:
    """With ``ops_bind``, /metrics, /openapi.json and /docs answer on that listener alone: 404
    on the HTTP port, where /healthz and the API stay; nothing but them on the other."""
    async with ops_server(ops_bind="127.0.0.1:0") as (srv, http):
        assert srv.ops_url is not None and srv.ops_url != srv.http_url
        for path in OPS_PATHS:
            assert_problem(await http.get(srv.http_url + path), 404)
        assert (await http.get(f"{srv.http_url}/healthz")).status_code == 200
        groups = await http.get(f"{srv.http_url}/api/v1/groups", headers=bearer(ADMIN))
        assert groups.status_code == 200
        await _assert_ops_answer(http, srv.ops_url)
        for path in ("/healthz", "/api/v1/groups", "/protocol.schema.json"):
            assert_problem(await http.get(srv.ops_url + path, headers=bearer(ADMIN)), 404)


async def test_ops_token_guards_the_operations_endpoints() -> None:
    """With ``ops_token``, the operations endpoints want it as a bearer token (401 problem
    details otherwise, an API token included); /healthz and the protocol schema stay open.
    Wrong ones count against the address like wrong API tokens (6 here: below the limit)."""
    async with ops_server(ops_token=OPS_TOKEN, limits={"failures_before_wait": 6}) as (srv, http):
        for path in OPS_PATHS:
            for headers in ({}, bearer(ADMIN), bearer("ops-metrics-guess")):
                response = await http.get(srv.http_url + path, headers=headers)
                assert_problem(response, 401)
                assert response.headers["www-authenticate"] == 'Bearer realm="omni"'
        await _assert_ops_answer(http, srv.http_url, **bearer(OPS_TOKEN))
        assert (await http.get(f"{srv.http_url}/healthz")).status_code == 200
        assert (await http.get(f"{srv.http_url}/protocol.schema.json")).status_code == 200


async def test_ops_bind_and_ops_token_together() -> None:
    async with ops_server(ops_bind="127.0.0.1:0", ops_token=OPS_TOKEN) as (srv, http):
        assert srv.ops_url is not None
        assert_problem(await http.get(f"{srv.ops_url}/metrics"), 401)
        await _assert_ops_answer(http, srv.ops_url, **bearer(OPS_TOKEN))
        assert_problem(await http.get(f"{srv.http_url}/metrics", headers=bearer(OPS_TOKEN)), 404)


# -- live changes -----------------------------------------------------------------------------


async def test_a_new_greeting_is_used_at_once(srv: RunningServer, http: httpx.AsyncClient) -> None:
    body = (await http.get("/api/v1/services/25")).json()
    r = await http.put(
        "/api/v1/services/25", json={**body, "greeting": "Welcome {visitor}, I am {operator}."}
    )
    assert r.status_code == 200 and r.json()["greeting"] == "Welcome {visitor}, I am {operator}."
    async with (
        connect_tcp(f"{srv.ws_url}/ws/operator") as alice,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        await login(alice, TOK_ALICE)
        cid = (await start(vera, name="Vera"))["conversation_id"]
        await alice.send(
            "accept", conversation_id=(await alice.expect("offer"))["conversation"]["id"]
        )
        await vera.expect("assigned")
        assert (await vera.expect("message"))["text"] == "Welcome Vera, I am Alice."
        # And once more, while this conversation is open: the next one gets the newer text.
        r = await http.put("/api/v1/services/25", json={**body, "greeting": "v3 {operator}"})
        assert r.status_code == 200
        async with connect_tcp(f"{srv.ws_url}/ws/visitor") as will:
            await start(will, name="Will")
            offer = await alice.until("offer")
            assert offer["conversation"]["id"] != cid
            await alice.send("accept", conversation_id=offer["conversation"]["id"])
            await will.expect("assigned")
            assert (await will.expect("message"))["text"] == "v3 Alice"


async def test_deactivating_an_operator_signs_them_out(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as carla:
        await login(carla, TOK_CARLA)
        body = (await http.get("/api/v1/operators/3")).json()
        assert body == {"id": 3, "name": "Carla", "groups": [1], "capacity": 1, "active": True}
        r = await http.put("/api/v1/operators/3", json={**body, "active": False})
        assert r.status_code == 200 and r.json()["active"] is False
        error = await carla.expect("error")
        assert error["code"] == "operator_deactivated"
        with pytest.raises(ConnectionClosed), trio.fail_after(5):
            await carla.recv()
    assert 3 not in srv.hub.sessions
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as again:
        await again.send("login", token=TOK_CARLA)
        assert (await again.expect("error"))["code"] == "invalid_login"
    # Active again: the same token works (it was kept).
    assert (await http.put("/api/v1/operators/3", json=body)).status_code == 200
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as back:
        assert (await login(back, TOK_CARLA, available=False))["operator"]["id"] == 3


async def test_deleting_a_group_with_waiting_conversations_is_refused(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    assert (await http.post("/api/v1/groups", json={"id": 4, "name": "Spare"})).status_code == 201
    service = {"id": 28, "name": "Spare line", "schedule": "always", "links": [{"group": 4}]}
    assert (await http.post("/api/v1/services", json=service)).status_code == 201
    async with connect_tcp(f"{srv.ws_url}/ws/visitor") as vera:
        await start(vera, 28, name="Vera")
        await vera.expect("queued")
        # The service no longer links the group, but a visitor still waits in it.
        r = await http.put("/api/v1/services/28", json={**service, "links": [{"group": 1}]})
        assert r.status_code == 200
        assert_problem(
            await http.delete("/api/v1/groups/4"), 409, "group 4 still has 1 open conversation(s)"
        )
        await vera.send("end")
        await vera.until("closed")
    await eventually(lambda: not srv.hub.queue_lengths.get(4))
    assert (await http.delete("/api/v1/groups/4")).status_code == 204
