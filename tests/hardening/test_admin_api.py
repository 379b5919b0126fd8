"""The admin API and the configuration against a stranger: a real ``omni serve`` (serve.py) on
127.0.0.1 and a fresh PostgreSQL database, reached over real HTTP.

What must hold: guessing API tokens earns a growing wait (429, ``Retry-After``) that a forged
``X-Forwarded-For`` does not escape; the operations endpoints answer only where and to whom
``ops_bind`` and ``ops_token`` say; a guessable token in the file stops the server before it
serves, in one line; a long transcript comes a page at a time. Every attack is a bounded loop.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from omni.domain.conversation import Status
from omni.store import StoredEvent, Write
from omni.store.postgres import open_postgres_store
from tests.hardening.serve import ADMIN, ALICE, BRUNO, ROOT, Served, config_text, serving
from tests.support import make_conversation

pytestmark = pytest.mark.slow

#: Three free failures, then waits of 1 s, 2 s, 4 s ... (the defaults are 5, 1 s and 900 s).
LIMITS = "limits = { failures_before_wait = 3, failure_wait = 1.0, failure_wait_max = 4.0 }"
OPS_TOKEN = "ops-metrics-Yb4Nc8Vx2Qz6Lm1K"
#: Attempts any attack loop makes at most.
ATTEMPTS = 30


def bearer(token: str, forwarded: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    return headers | ({"X-Forwarded-For": forwarded} if forwarded else {})


@asynccontextmanager
async def api(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.http_url, timeout=10) as http:
        yield http


async def failures_until_wait(http: httpx.AsyncClient, forwarded: str | None = None) -> int:
    """Wrong tokens sent (each from ``forwarded``, or ``forwarded`` with a counter when it has
    ``{n}``) until the server answers 429; the number of 401s before it."""
    for n in range(ATTEMPTS):
        address = forwarded.format(n=n) if forwarded else None
        response = await http.get("/api/v1/groups", headers=bearer(f"guess-{n}", address))
        if response.status_code == 429:
            return n
        assert response.status_code == 401, response.text
    raise AssertionError(f"no 429 after {ATTEMPTS} wrong tokens")


def assert_waits(response: httpx.Response) -> int:
    """A 429 problem; its Retry-After, whole seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://omni.dev/problems/too-many-attempts"
    assert body["status"] == 429
    assert re.fullmatch(r"[1-9]\d*", response.headers["Retry-After"])
    return int(response.headers["Retry-After"])


@pytest.mark.postgresql
async def test_guessing_api_tokens_earns_a_growing_wait(postgres_dsn: str, tmp_path: Path) -> None:
    """Wrong tokens from one address: free ones, then 429 with a Retry-After that doubles with
    each failure past the free ones — the right token included — until a success forgets."""
    async with serving(tmp_path, postgres_dsn, server=LIMITS) as served, api(served) as http:
        with trio.fail_after(20):
            # 3 free failures, the 4th sets a 1 s wait: the 5th request is refused unread.
            assert await failures_until_wait(http) == 4
            assert assert_waits(await http.get("/api/v1/groups", headers=bearer(ADMIN))) == 1
            await trio.sleep(1.1)
            # The wait is over; the next failure doubles it.
            response = await http.get("/api/v1/groups", headers=bearer("guess-again"))
            assert response.status_code == 401
            assert assert_waits(await http.get("/api/v1/groups", headers=bearer(ADMIN))) == 2
            await trio.sleep(2.1)
            # The right token, once the wait is over, works and forgets the failures.
            response = await http.get("/api/v1/groups", headers=bearer(ADMIN))
            assert response.status_code == 200, response.text
            assert await failures_until_wait(http) == 4
    assert ADMIN not in served.log()


@pytest.mark.postgresql
async def test_a_forged_forwarded_for_does_not_escape_the_wait(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """No trusted proxy: each wrong token names another address in X-Forwarded-For, and all
    count against 127.0.0.1."""
    async with serving(tmp_path, postgres_dsn, server=LIMITS) as served, api(served) as http:
        with trio.fail_after(10):
            assert await failures_until_wait(http, forwarded="198.51.100.{n}") == 4
            response = await http.get("/api/v1/groups", headers=bearer(ADMIN, "192.0.2.1"))
            assert_waits(response)


@pytest.mark.postgresql
async def test_behind_a_trusted_proxy_the_forwarded_client_waits(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """127.0.0.1 is a trusted proxy: the address it forwards for is the client. That client
    waits; another one behind the same proxy, and the proxy itself, do not."""
    server = f'{LIMITS}\ntrusted_proxies = ["127.0.0.1"]'
    async with serving(tmp_path, postgres_dsn, server=server) as served, api(served) as http:
        with trio.fail_after(10):
            # What the client itself wrote before the proxy's entry is not believed.
            guesser = "10.0.0.{n}, 203.0.113.7"
            assert await failures_until_wait(http, forwarded=guesser) == 4
            assert_waits(await http.get("/api/v1/groups", headers=bearer(ADMIN, "203.0.113.7")))
            other = await http.get("/api/v1/groups", headers=bearer(ADMIN, "203.0.113.8"))
            assert other.status_code == 200, other.text
            itself = await http.get("/api/v1/groups", headers=bearer(ADMIN))
            assert itself.status_code == 200, itself.text


@pytest.mark.postgresql
async def test_operations_endpoints_only_on_ops_bind_and_with_ops_token(
    postgres_dsn: str, tmp_path: Path
) -> None:
    server = f'ops_bind = "127.0.0.1:0"\nops_token = "{OPS_TOKEN}"'
    async with serving(tmp_path, postgres_dsn, server=server) as served, api(served) as http:
        found = re.search(r"/openapi\.json on (http://127\.0\.0\.1:\d+) only", served.log())
        assert found, served.log()
        ops = found.group(1)
        assert ops != served.http_url
        with trio.fail_after(10):
            for path in ("/metrics", "/docs", "/openapi.json"):
                # Not on the HTTP port, token or not.
                response = await http.get(path, headers=bearer(OPS_TOKEN))
                assert response.status_code == 404, response.text
                assert response.headers["content-type"] == "application/problem+json"
                # On the ops listener, only with the ops token.
                for headers in ({}, bearer(ADMIN), bearer("ops-metrics-guess")):
                    refused = await http.get(ops + path, headers=headers)
                    assert refused.status_code == 401, refused.text
                    assert refused.headers["content-type"] == "application/problem+json"
                answered = await http.get(ops + path, headers=bearer(OPS_TOKEN))
                assert answered.status_code == 200, answered.text
            metrics = await http.get(f"{ops}/metrics", headers=bearer(OPS_TOKEN))
            assert "omni_connections" in metrics.text
            assert (await http.get("/healthz")).json()["status"] == "ok"
            assert (await http.get(f"{ops}/healthz")).status_code == 404
    assert OPS_TOKEN not in served.log()


@pytest.mark.parametrize(
    ("weak", "strong", "where"),
    [
        ('"admin-secret-token"', f'"{ADMIN}"', "$.api_tokens[0]"),
        ('"alice-2026"', f'"{ALICE}"', "$.operators[0]"),
        ('"bruno-bruno-bruno-bruno-bruno"', f'"{BRUNO}"', "$.operators[1]"),
        ('http_port = 0\nops_token = "metrics-metrics-metrics"', "http_port = 0", "$.server"),
    ],
)
async def test_a_weak_token_in_the_file_stops_the_server_in_one_line(
    tmp_path: Path, weak: str, strong: str, where: str
) -> None:
    """A guessable token in the configuration: ``omni serve`` refuses to start — exit status 2,
    one line naming the field — before it reaches for the database."""
    path = tmp_path / "omni.toml"
    path.write_text(config_text().replace(strong, weak, 1))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OMNI_")}
    result = await trio.run_process(
        [sys.executable, "-m", "omni.cli", "serve", "--config", str(path)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=ROOT,
        # Nothing listens there: reaching for it would fail with status 1, not 2.
        env={**environment, "OMNI_DATABASE_URL": "postgresql://omni@127.0.0.1:1/omni"},
    )
    message = result.stderr.decode().strip()
    assert result.returncode == 2, message
    assert message.count("\n") == 0, message
    assert message.startswith(f"omni: {path}: ") and "is too weak" in message, message
    assert message.endswith(f"at `{where}`"), message
    assert result.stdout == b""


@pytest.mark.postgresql
async def test_a_long_transcript_comes_a_page_at_a_time(postgres_dsn: str, tmp_path: Path) -> None:
    """A conversation of 1,100 events, read the way a client pages: never more than ``limit``
    events an answer, ``next_after`` to go on, null at the end; a page too large is refused."""
    async with serving(tmp_path, postgres_dsn) as served, api(served) as http:
        conv = make_conversation(1, Status.CLOSED)
        conv.last_seq = 1100
        events = [
            StoredEvent(
                conv.id,
                seq,
                "message",
                "both",
                json.dumps({"type": "message", "seq": seq, "text": f"message {seq}"}),
            )
            for seq in range(1, 1101)
        ]
        async with open_postgres_store(postgres_dsn) as store:
            await store.write(Write(conversation=conv, events=events))
        url = f"/api/v1/conversations/{conv.id}/transcript"
        with trio.fail_after(15):
            seen: list[int] = []
            after: int | None = 0
            pages = 0
            while after is not None and pages < 10:
                response = await http.get(url, params={"after": after}, headers=bearer(ADMIN))
                assert response.status_code == 200, response.text
                body = response.json()
                assert len(body["events"]) <= 200
                seen += [e["seq"] for e in body["events"]]
                after, pages = body["next_after"], pages + 1
            assert seen == list(range(1, 1101)) and pages == 6
            response = await http.get(url, params={"limit": 1000}, headers=bearer(ADMIN))
            body = response.json()
            assert len(body["events"]) == 1000 and body["next_after"] == 1000
            last = await http.get(url, params={"after": 1000, "limit": 1000}, headers=bearer(ADMIN))
            assert [e["seq"] for e in last.json()["events"]] == list(range(1001, 1101))
            assert last.json()["next_after"] is None
            too_large = await http.get(url, params={"limit": 1001}, headers=bearer(ADMIN))
            assert too_large.status_code == 400
            assert too_large.headers["content-type"] == "application/problem+json"
            assert "limit must be between 1 and 1000" in too_large.json()["detail"]
