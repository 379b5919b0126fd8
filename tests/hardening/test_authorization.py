"""Item 4: one authorization rule per action, whichever door the request comes through.

* The console's ``resume {conversation_id}`` has the API's scope: an operator takes an
  out-of-hours conversation of a service their groups serve (or one they handled), and any
  other id is, for them, no conversation at all.
* An operator-role API token acts as its operator: deactivating the operator disables it.
* Changing an operator's console token ends the sessions it opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from tests.hardening.serve import ADMIN, ALICE, BRUNO, Served, serving
from tests.support import Client, connect_tcp, login, start

NATIVE = "native_visitors = true\nnative_operators = true"

#: A console token an administrator rotates to, and an operator-role API token.
ROTATED = "alice-rotated-Vb7Nq2Lx9Rt4Kc8Wm3Zp"
DESK = "alice-desk-api-Fh3Jk8Ls2Qw9Er6Ty1Ui"


def _api(served: Served, token: str = ADMIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=served.http_url, headers={"Authorization": f"Bearer {token}"})


async def _change_operator(served: Served, operator_id: int, **changes: Any) -> None:
    async with _api(served) as api:
        body = (await api.get(f"/api/v1/operators/{operator_id}")).json()
        reply = await api.put(f"/api/v1/operators/{operator_id}", json={**body, **changes})
        assert reply.status_code == 200, reply.text


async def test_the_console_resumes_only_within_the_operators_services(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """Service 26 (out of hours) is served by Bruno's group, not Alice's."""
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as served:
        url = served.ws_url
        async with connect_tcp(f"{url}/ws/visitor") as vera:
            conversation_id = (await start(vera, 26))["conversation_id"]
            await vera.expect("out_of_hours")
            async with connect_tcp(f"{url}/ws/operator") as alice:
                await login(alice, ALICE)
                await alice.send("resume", conversation_id=conversation_id)
                refused = await alice.expect("error")
                assert refused["code"] == "unknown_conversation", refused
                # Exactly as for an id that does not exist.
                await alice.send("resume", conversation_id="no-such-conversation")
                assert (await alice.expect("error"))["code"] == "unknown_conversation"
                # Nothing happened to the conversation.
                async with _api(served) as api:
                    detail = (await api.get(f"/api/v1/conversations/{conversation_id}")).json()
                stored = detail["conversation"]
                assert stored["status"] == "out_of_hours" and stored["operator_id"] is None
            async with connect_tcp(f"{url}/ws/operator") as bruno:
                await login(bruno, BRUNO)
                await bruno.send("resume", conversation_id=conversation_id)
                assert (await bruno.until("assigned"))["conversation_id"] == conversation_id
            assert (await vera.until("assigned"))["operator"]["id"] == 2


async def test_an_inactive_operators_api_token_stops_working(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as served:
        async with _api(served) as api:
            desk = {"id": "desk", "name": "Alice's desk", "role": "operator", "operator_id": 1}
            reply = await api.post("/api/v1/api-tokens", json={**desk, "token": DESK})
            assert reply.status_code == 201, reply.text
        async with _api(served, DESK) as as_alice:
            assert (await as_alice.get("/api/v1/conversations")).status_code == 200
            await _change_operator(served, 1, active=False)
            refused = await as_alice.get("/api/v1/conversations")
            assert refused.status_code == 401, refused.text
            await _change_operator(served, 1, active=True)
            assert (await as_alice.get("/api/v1/conversations")).status_code == 200


async def _closed_with(client: Client) -> tuple[dict[str, Any], ConnectionClosed]:
    """The error frame the server sent before closing, and the close."""
    error: dict[str, Any] = {}
    with trio.fail_after(10):
        while True:
            try:
                frame = await client.recv()
            except ConnectionClosed as closed:
                return error, closed
            if frame["type"] == "error":
                error = frame


async def test_a_rotated_console_token_ends_the_sessions_it_opened(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as served:
        url = f"{served.ws_url}/ws/operator"
        async with connect_tcp(url) as alice:
            await login(alice, ALICE)
            # A change that leaves the token alone signs nobody out.
            await _change_operator(served, 1, name="Alice B.")
            await alice.send("ping")
            await alice.until("pong")
            await _change_operator(served, 1, token=ROTATED)
            error, closed = await _closed_with(alice)
            assert error["code"] == "credentials_changed", error
            assert closed.reason.code == 1008 and closed.reason.reason == "credentials_changed"
        async with connect_tcp(url) as again:
            await again.send("login", token=ALICE)
            assert (await again.expect("error"))["code"] == "invalid_login"
            welcome = await login(again, ROTATED, available=False)
            assert welcome["operator"]["name"] == "Alice B."
