"""Item 3: the page's ``Origin`` is checked on the handshake, before a socket is given away.

``/ws/visitor`` takes pages some service accepts (each ``start`` then checks its own service);
``/ws/operator`` takes the console's origins and the server's own; a client that sends no
Origin is let in only where the configuration says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected

from tests.hardening.serve import ADMIN, ALICE, Served, serving
from tests.support import connect_tcp, login, start_with

SHOP = "https://shop.example"
CONSOLE = "https://console.example"
EVIL = "https://evil.example"

SERVER = f'console_origins = ["{CONSOLE}"]'


async def _allow(served: Served, service_id: int, origins: list[str]) -> None:
    """Set a service's allowed_origins through the admin API (a live change)."""
    auth = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=served.http_url, headers=auth) as api:
        body: dict[str, Any] = (await api.get(f"/api/v1/services/{service_id}")).json()
        body["allowed_origins"] = origins
        reply = await api.put(f"/api/v1/services/{service_id}", json=body)
        assert reply.status_code == 200, reply.text


async def _refused(url: str, origin: str | None) -> ConnectionRejected:
    with pytest.raises(ConnectionRejected) as refused:
        async with connect_tcp(url, origin=origin):
            pass
    return refused.value


async def test_the_visitor_endpoint_takes_only_pages_a_service_accepts(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=SERVER) as served:
        await _allow(served, 25, [SHOP])
        await _allow(served, 26, ["https://other.example"])
        url = f"{served.ws_url}/ws/visitor"
        refused = await _refused(url, EVIL)
        assert refused.status_code == 403 and b"evil.example" in (refused.body or b"")
        # A program (no Origin) is not let in unless native_visitors says so.
        assert (await _refused(url, None)).status_code == 403
        async with connect_tcp(url, origin=SHOP) as vera:
            # Past the handshake, each start checks its own service.
            refused_start = await start_with(vera, 26, visitor={"name": "Vera"})
            assert refused_start["code"] == "origin_not_allowed", refused_start
            assert (await start_with(vera, 25, visitor={"name": "Vera"}))["type"] == "started"
        # The server's own WebChat page is let in, and starts on any service: where it may be
        # embedded is its CSP's frame-ancestors (the service's allowed_origins), for the browser.
        async with connect_tcp(url, origin=served.http_url) as own:
            assert (await start_with(own, 25, visitor={"name": "Ona"}))["type"] == "started"
        # A service that lists no origins may be embedded anywhere: then any page gets in.
        await _allow(served, 26, [])
        async with connect_tcp(url, origin=EVIL) as eve:
            assert (await start_with(eve, 26, visitor={"name": "Eve"}))["type"] == "started"
        async with connect_tcp(url, origin=EVIL) as eve:
            assert (await start_with(eve, 25, visitor={"name": "Eve"}))["code"] == (
                "origin_not_allowed"
            )


async def test_the_operator_endpoint_takes_only_the_console(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with serving(tmp_path, postgres_dsn, server=SERVER) as served:
        url = f"{served.ws_url}/ws/operator"
        assert (await _refused(url, EVIL)).status_code == 403
        assert (await _refused(url, None)).status_code == 403
        # A visitor page is no console, even one every service accepts.
        assert (await _refused(url, SHOP)).status_code == 403
        async with httpx.AsyncClient(base_url=served.http_url) as http:
            metrics = (await http.get("/metrics")).text
        assert 'omni_refused_total{reason="handshake_origin"} 3.0' in metrics
        for origin in (CONSOLE, served.http_url):  # configured, and the server's own pages
            async with connect_tcp(url, origin=origin) as alice:
                welcome = await login(alice, ALICE, available=False)
                assert welcome["operator"]["id"] == 1


async def test_programs_without_an_origin_where_the_configuration_allows_them(
    tmp_path: Path, postgres_dsn: str
) -> None:
    server = "native_visitors = true\nnative_operators = true"
    async with serving(tmp_path, postgres_dsn, server=server) as served:
        async with (
            connect_tcp(f"{served.ws_url}/ws/visitor") as vera,
            connect_tcp(f"{served.ws_url}/ws/operator") as alice,
        ):
            assert (await start_with(vera, 25, visitor={"name": "Vera"}))["type"] == "started"
            await login(alice, ALICE, available=False)
        # A browser page still needs an allowed origin.
        with trio.fail_after(10):
            assert (await _refused(f"{served.ws_url}/ws/operator", EVIL)).status_code == 403
