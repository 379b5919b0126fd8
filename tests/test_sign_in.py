"""Issue 14, item 1: people sign in with a user name and a password (argon2id) and get a
short-lived session, which works as a bearer token for the admin API with their role's rights
and for the console's ``login``. Signing out, changing or resetting the password, and
deactivation end every session of that person at once and close their consoles
(``session_ended``). Failed sign-ins are throttled per address and per user name.

A whole server on 127.0.0.1, real HTTP and real websockets, the memory store (the PostgreSQL
store passes the same contract: ``test_store_admin_contract``); time beyond a session's
lifetime is reached by moving the server clock's epoch, not by sleeping.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from omni.clock import Clock
from omni.entropy import SeededEntropy
from omni.server import RunningServer, open_server
from tests.support import Client, api_token, connect_tcp, make_config, with_items

ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
PASSWORDS = {
    "ana": "correct horse battery staple",
    "sam": "supervising-is-a-long-word 42",
    "olga": "her console passphrase 7",
}
USERS = (
    {"id": "ana", "username": "Ana", "name": "Ana Admin", "role": "admin"},
    {"id": "sam", "username": "sam", "name": "Sam Supervisor", "role": "supervisor"},
    {"id": "olga", "username": "olga", "name": "Olga", "role": "operator", "operator_id": 1},
)


@pytest.fixture
async def clock() -> Clock:
    return Clock(datetime(2026, 12, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
async def srv(clock: Clock) -> AsyncIterator[RunningServer]:
    # 127.0.0.1 is a trusted proxy here, so that a test can speak from several addresses.
    config = with_items(
        make_config(trusted_proxies=["127.0.0.1"], limits={"failures_before_wait": 3}),
        api_token("root", ADMIN),
    )
    async with open_server(
        config, clock=clock, entropy=SeededEntropy(3), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        async with httpx.AsyncClient(base_url=running.http_url, headers=_bearer(ADMIN)) as api:
            for user in USERS:
                reply = await api.post(
                    "/api/v1/users", json={**user, "password": PASSWORDS[user["id"]]}
                )
                assert reply.status_code == 201, reply.text
                assert "password" not in reply.json() and "password_hash" not in reply.json()
        yield running


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _http(srv: RunningServer, token: str | None = None, ip: str = "192.0.2.1") -> httpx.AsyncClient:
    headers = {"X-Forwarded-For": ip, **(_bearer(token) if token else {})}
    return httpx.AsyncClient(base_url=srv.http_url, headers=headers)


async def sign_in(srv: RunningServer, user: str, password: str | None = None) -> str:
    async with _http(srv) as http:
        reply = await http.post(
            "/api/v1/session",
            json={"username": user, "password": password or PASSWORDS[user.lower()]},
        )
    assert reply.status_code == 201, reply.text
    body = reply.json()
    assert body["token"].startswith("omni_session_")
    token: str = body["token"]
    return token


async def status_with(srv: RunningServer, token: str, path: str = "/api/v1/conversations") -> int:
    async with _http(srv, token) as http:
        return (await http.get(path)).status_code


async def console(srv: RunningServer, token: str) -> AsyncIterator[Client]:
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as client:
        await client.send("login", token=token)
        yield client


async def closed_with(client: Client) -> str:
    """The code of the error frame the server sent before it closed the connection."""
    code = ""
    with trio.fail_after(10):
        while True:
            try:
                frame = await client.recv()
            except ConnectionClosed:
                return code
            if frame["type"] == "error":
                code = frame["code"]


def _no_secret(text: str) -> None:
    assert "$argon2" not in text and "password_hash" not in text
    for password in PASSWORDS.values():
        assert password not in text


async def test_a_session_acts_with_its_roles_rights_and_no_more(srv: RunningServer) -> None:
    sam = await sign_in(srv, "SAM")  # user names are not case-sensitive
    assert await status_with(srv, sam) == 200
    assert await status_with(srv, sam, "/api/v1/services") == 200
    assert await status_with(srv, sam, "/api/v1/users") == 403
    async with _http(srv, sam) as http:
        refused = await http.post("/api/v1/groups", json={"id": 9, "name": "Nine"})
        assert refused.status_code == 403
        me = await http.get("/api/v1/session")
        assert me.status_code == 200
        assert me.json()["user"] == {**USERS[1], "operator_id": None, "active": True}
    olga = await sign_in(srv, "olga")
    assert await status_with(srv, olga) == 200
    assert await status_with(srv, olga, "/api/v1/services") == 403
    ana = await sign_in(srv, "Ana")
    async with _http(srv, ana) as http:
        assert (
            await http.post("/api/v1/groups", json={"id": 9, "name": "Nine"})
        ).status_code == 201
        audit = (await http.get("/api/v1/audit")).json()["items"]
        assert audit[0]["actor"] == "user:ana"
        users = await http.get("/api/v1/users")
        assert [u["id"] for u in users.json()] == ["ana", "olga", "sam"]
        _no_secret(users.text + (await http.get("/api/v1/audit?limit=500")).text)
    # A session is not an API token of another kind: a made-up one is refused.
    assert await status_with(srv, "omni_session_" + "x" * 43) == 401


async def test_wrong_passwords_are_refused_then_throttled_per_address_and_per_name(
    srv: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    async def attempt(username: str, password: str, ip: str) -> httpx.Response:
        async with _http(srv, ip=ip) as http:
            body = {"username": username, "password": password}
            return await http.post("/api/v1/session", json=body)

    for n in range(4):
        refused = await attempt("sam", f"not the password {n}", "198.51.100.1")
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"] == "wrong user name or password"
    # An unknown user name gets the same answer.
    unknown = await attempt("nobody", "whatever it is", "198.51.100.9")
    assert unknown.status_code == 401 and unknown.json()["detail"] == "wrong user name or password"
    # Past failures_before_wait (3) failures, this address waits, even with the right password...
    waiting = await attempt("sam", PASSWORDS["sam"], "198.51.100.1")
    assert waiting.status_code == 429, waiting.text
    assert int(waiting.headers["Retry-After"]) >= 1
    # ...and so does the user name, from any other address.
    elsewhere = await attempt("SAM", PASSWORDS["sam"], "203.0.113.7")
    assert elsewhere.status_code == 429
    # Another person from another address is not concerned.
    assert (await attempt("ana", PASSWORDS["ana"], "203.0.113.8")).status_code == 201
    _no_secret(caplog.text)
    assert "failed credentials" in caplog.text


async def test_a_session_signs_in_to_the_console(srv: RunningServer) -> None:
    olga = await sign_in(srv, "olga")
    async for alice in console(srv, olga):
        welcome = await alice.expect("welcome")
        assert welcome["operator"]["id"] == 1
    # A supervisor's session is not an operator's.
    async for nobody in console(srv, await sign_in(srv, "sam")):
        assert (await nobody.expect("error"))["code"] == "invalid_login"


async def test_signing_out_ends_every_session_and_closes_the_console(srv: RunningServer) -> None:
    first, second = await sign_in(srv, "olga"), await sign_in(srv, "olga")
    sam = await sign_in(srv, "sam")
    async for alice in console(srv, first):
        await alice.expect("welcome")
        async with _http(srv, second) as http:
            assert (await http.delete("/api/v1/session")).status_code == 204
        assert await closed_with(alice) == "session_ended"
    assert await status_with(srv, first) == 401
    assert await status_with(srv, second) == 401
    assert await status_with(srv, sam) == 200  # somebody else's session lives on
    async for again in console(srv, first):
        assert (await again.expect("error"))["code"] == "invalid_login"
    # An API token has no session to end.
    async with _http(srv, ADMIN) as http:
        assert (await http.delete("/api/v1/session")).status_code == 403


async def test_changing_ones_password_needs_the_old_one_and_ends_the_other_sessions(
    srv: RunningServer,
) -> None:
    here, there = await sign_in(srv, "olga"), await sign_in(srv, "olga")
    new = "a brand new passphrase 2026"
    async for alice in console(srv, there):
        await alice.expect("welcome")
        async with _http(srv, here) as http:
            body: dict[str, Any] = {"old_password": "guessing wrong", "new_password": new}
            wrong = await http.post("/api/v1/session/password", json=body)
            assert wrong.status_code == 401, wrong.text
            body = {"old_password": PASSWORDS["olga"], "new_password": "olga-olga-olga-1"}
            weak = await http.post("/api/v1/session/password", json=body)
            assert weak.status_code == 422 and "user name" in weak.json()["detail"]
            body = {"old_password": PASSWORDS["olga"], "new_password": new}
            changed = await http.post("/api/v1/session/password", json=body)
            assert changed.status_code == 200, changed.text
            _no_secret(changed.text.replace(new, ""))
            fresh = changed.json()["token"]
        assert await closed_with(alice) == "session_ended"
    assert await status_with(srv, here) == 401
    assert await status_with(srv, there) == 401
    assert await status_with(srv, fresh) == 200
    async with _http(srv, ip="192.0.2.50") as http:
        old = {"username": "olga", "password": PASSWORDS["olga"]}
        assert (await http.post("/api/v1/session", json=old)).status_code == 401
    await sign_in(srv, "olga", new)


async def test_an_administrators_reset_and_a_deactivation_end_the_sessions(
    srv: RunningServer,
) -> None:
    ana = await sign_in(srv, "ana")
    olga = await sign_in(srv, "olga")
    async for alice in console(srv, olga):
        await alice.expect("welcome")
        async with _http(srv, ana) as http:
            too_short = await http.put("/api/v1/users/olga/password", json={"password": "short"})
            assert too_short.status_code == 422
            reset = {"password": "reset by the administrator 1"}
            assert (await http.put("/api/v1/users/olga/password", json=reset)).status_code == 204
        assert await closed_with(alice) == "session_ended"
    assert await status_with(srv, olga) == 401
    olga = await sign_in(srv, "olga", "reset by the administrator 1")
    async for alice in console(srv, olga):
        await alice.expect("welcome")
        async with _http(srv, ana) as http:
            body = (await http.get("/api/v1/users/olga")).json()
            assert (await http.put("/api/v1/users/olga", json={**body, "active": False})).is_success
            assert await closed_with(alice) == "session_ended"
            assert await status_with(srv, olga) == 401
            assert (await http.put("/api/v1/users/olga", json=body)).is_success
            # Coming back does not bring the old sessions back.
            assert await status_with(srv, olga) == 401
            # A password is set through its own route only.
            refused = await http.put("/api/v1/users/olga", json={**body, "password": "x" * 20})
            assert refused.status_code == 422
    await sign_in(srv, "olga", "reset by the administrator 1")


async def test_an_expired_session_is_refused(srv: RunningServer, clock: Clock) -> None:
    olga = await sign_in(srv, "olga")
    async with _http(srv, olga) as http:
        me = (await http.get("/api/v1/session")).json()
    expires = datetime.fromisoformat(me["expires_at"])
    assert timedelta(hours=7, minutes=59) < expires - clock.now() <= timedelta(hours=8)
    clock.epoch += timedelta(hours=8, seconds=1)
    assert await status_with(srv, olga) == 401
    async for alice in console(srv, olga):
        assert (await alice.expect("error"))["code"] == "invalid_login"


async def test_a_console_and_a_live_view_close_when_their_session_expires(
    srv: RunningServer, clock: Clock
) -> None:
    olga, sam = await sign_in(srv, "olga"), await sign_in(srv, "sam")
    async with (
        connect_tcp(f"{srv.ws_url}/ws/operator") as console,
        connect_tcp(f"{srv.ws_url}/ws/supervisor") as view,
    ):
        await console.send("login", token=olga)
        assert (await console.expect("welcome"))["operator"]["id"] == 1
        await view.send("login", token=sam)
        assert (await view.until("welcome"))["supervisor"]["id"] == "user:sam"
        clock.epoch += timedelta(hours=8, seconds=1)
        # The next frame either sends (a ping here) finds the session over.
        for client in (console, view):
            await client.send("ping")
            assert (await client.until("error"))["code"] == "session_ended"
            with pytest.raises(ConnectionClosed):
                await client.recv()


async def test_one_budget_of_failures_per_address_whichever_door(srv: RunningServer) -> None:
    # Four wrong bearer tokens over HTTP from 127.0.0.1 (three are free here; the fourth
    # starts a wait of a second) ...
    olga = await sign_in(srv, "olga")  # (from another address, beforehand: it takes time)
    for _ in range(4):
        async with _http(srv, "not-a-token-at-all-0123456789", ip="127.0.0.1") as http:
            assert (await http.get("/api/v1/conversations")).status_code == 401
    # ... and the console's login from the same address must wait too, a right one included.
    async with connect_tcp(f"{srv.ws_url}/ws/operator") as client:
        await client.send("login", token=olga)
        frame = await client.recv()
    assert (frame["type"], frame.get("code")) == ("error", "too_many_attempts"), frame
