"""F8: a logged-in visitor identified by the embedding site, with a signed identity (JWT HS256)
checked against the service's ``identity_secret`` on the server's clock — in virtual time over
in-memory websockets, and the secret's handling through the admin API over real HTTP."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest
import trio

from omni.config import SECRET_FIELDS, Config
from omni.server import open_server
from tests.support import (
    TOK_BRUNO,
    api_token,
    connect_memory,
    login,
    make_config,
    open_memory_gateway,
    start_with,
    with_items,
    with_service,
)

SECRET = "s3cret-of-the-embedding-site-0123456789"
EPOCH = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW = int(EPOCH.timestamp())


def signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT's key-length advice for HS512 (a refused case)
        return jwt.encode({"exp": NOW + 300, **claims}, secret, algorithm=algorithm)


def config_with_secret() -> Config:
    return with_service(make_config(), 27, lambda body: body.update(identity_secret=SECRET))


async def test_a_signed_identity_identifies_the_visitor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(config_with_secret(), epoch=EPOCH) as gw,
        connect_memory(gw, "/ws/operator") as bruno,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        await login(bruno, TOK_BRUNO)
        token = signed({"name": "Vera Lopez", "email": "vera@example.com", "service_id": 27})
        # What the page typed is ignored in favour of the signed claims; custom fields stay.
        typed = {"name": "Somebody Else", "email": "evil@example.com", "fields": {"plan": "gold"}}
        started = await start_with(vera, identity=token, visitor=typed)
        assert started["type"] == "started", started
        offer = await bruno.until("offer")
        assert offer["conversation"]["visitor"] == {
            "name": "Vera Lopez",
            "email": "vera@example.com",
            "fields": {"plan": "gold"},
            "verified": True,
        }
        # A typed-in visitor is not marked verified.
        async with connect_memory(gw, "/ws/visitor") as will:
            started = await start_with(will, visitor={"name": "Will"})
            assert started["type"] == "started"
            assert not gw.hub.store.conversations()[-1].visitor.verified  # type: ignore[attr-defined]
        # Without `visitor`, the identity alone is enough.
        async with connect_memory(gw, "/ws/visitor") as ana:
            started = await start_with(ana, identity=signed({"name": "Ana"}))
            assert started["type"] == "started", started


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (signed({"name": "Vera"}, secret="another-secret-of-32-characters-xx"), "not valid"),
        (signed({"name": "Vera", "exp": NOW - 60}), "has expired"),
        (signed({"name": "Vera", "service_id": 25}), "for service 25, not 27"),
        (signed({"email": "vera@example.com"}), "no `name` claim"),
        (signed({"name": ""}), "`name` must be text"),
        (signed({"name": "Vera", "email": 5}), "`email` must be text"),
        (jwt.encode({"name": "Vera"}, SECRET, algorithm="HS256"), "no `exp` claim"),
        (signed({"name": "Vera"}, secret="", algorithm="none"), "not valid"),
        (signed({"name": "Vera"}, algorithm="HS512"), "not valid"),
        (signed({"name": "Vera"})[:-4] + "AAAA", "not valid"),
        ("not-a-jwt", "not valid"),
    ],
    ids=[
        "wrong-secret",
        "expired",
        "other-service",
        "no-name",
        "blank-name",
        "email-not-text",
        "no-exp",
        "alg-none",
        "alg-hs512",
        "tampered",
        "garbage",
    ],
)
async def test_an_identity_that_cannot_be_trusted_is_refused(
    token: str, detail: str, autojump_clock: trio.testing.MockClock
) -> None:
    async with (
        open_memory_gateway(config_with_secret(), epoch=EPOCH) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        error = await start_with(vera, identity=token, visitor={"name": "Vera"})
        assert error["type"] == "error" and error["code"] == "invalid_identity", error
        assert detail in error["message"]
        # Nothing was started: the connection may try again.
        started = await start_with(vera, identity=signed({"name": "Vera"}))
        assert started["type"] == "started"


async def test_the_identity_expires_on_the_servers_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_memory_gateway(config_with_secret(), epoch=EPOCH) as gw:
        token = signed({"name": "Vera", "exp": NOW + 120})
        await trio.sleep(100)  # virtual time: still valid (with 30 s of leeway until +150)
        async with connect_memory(gw, "/ws/visitor") as vera:
            assert (await start_with(vera, identity=token))["type"] == "started"
        await trio.sleep(60)
        async with connect_memory(gw, "/ws/visitor") as vera:
            error = await start_with(vera, identity=token)
            assert error["code"] == "invalid_identity" and "expired" in error["message"]


async def test_a_service_without_a_secret_accepts_no_identity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        open_memory_gateway(config_with_secret(), epoch=EPOCH) as gw,
        connect_memory(gw, "/ws/visitor") as vera,
    ):
        error = await start_with(vera, 25, identity=signed({"name": "Vera"}))
        assert error["code"] == "invalid_identity"
        assert error["message"] == "service 25 accepts no signed identities"
        error = await start_with(vera, 27)
        assert error["code"] == "invalid_frame" and "visitor.name is required" in error["message"]


async def test_the_identity_secret_is_write_only() -> None:
    admin = {"Authorization": "Bearer admin-secret-token-1234-Ko8Ip2Lm"}
    config = with_items(make_config(), api_token("root", "admin-secret-token-1234-Ko8Ip2Lm"))
    assert "identity_secret" in SECRET_FIELDS
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(base_url=srv.http_url, headers=admin, timeout=10) as http,
    ):
        body = (await http.get("/api/v1/services/27")).json()
        r = await http.put("/api/v1/services/27", json={**body, "identity_secret": SECRET})
        assert r.status_code == 200 and "identity_secret" not in r.json()
        assert "identity_secret" not in (await http.get("/api/v1/services/27")).json()
        assert srv.hub.directory.services[27].identity_secret == SECRET
        assert SECRET not in (await http.get("/api/v1/audit", params={"limit": 5})).text
        assert SECRET not in repr(srv.hub.directory.services[27])
        # Left out of a PUT: kept. Null: removed. Too short: refused.
        r = await http.put("/api/v1/services/27", json={**body, "name": "Renamed"})
        assert r.status_code == 200
        assert srv.hub.directory.services[27].identity_secret == SECRET
        r = await http.put("/api/v1/services/27", json={**body, "identity_secret": "short"})
        assert r.status_code == 422 and "identity_secret" in r.json()["detail"]
        r = await http.put("/api/v1/services/27", json={**body, "identity_secret": None})
        assert r.status_code == 200
        assert srv.hub.directory.services[27].identity_secret is None
        doc = (await http.get("/openapi.json")).json()
        for name in ("Service", "ServiceInput"):
            schema = doc["components"]["schemas"][name]["properties"]["identity_secret"]
            assert schema["writeOnly"] is True
