"""Item 6: values made to hurt — a precise refusal, the connection open, nothing in the log.

* JSON nested a thousand levels deep (2 KB): ``bad_json``, not a crashed handler (1011) with a
  traceback in the log.
* A ``folder`` cursor naming a time outside 1970-9000 (PostgreSQL's and Python's date
  arithmetic overflow near year 1): ``invalid_cursor``, like the API's 400 for it.
* CAPTCHA checks, each a request to somebody else's server: limited per client address, and a
  provider that is down is reported once per interval, not once per visitor.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.hardening.serve import ADMIN, ALICE, serving
from tests.support import Client, connect_tcp, login, start_with
from tests.test_captcha import PASSED, SECRET, siteverify

NATIVE = "native_visitors = true\nnative_operators = true"


async def _still_open(client: Client) -> None:
    await client.send("ping")
    await client.until("pong")


async def test_deeply_nested_json_is_bad_json(tmp_path: Path, postgres_dsn: str) -> None:
    deep = '{"type":"ping","x":' + "[" * 1_000 + "]" * 1_000 + "}"
    assert len(deep) < 2_100
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as served:
        for path in ("/ws/visitor", "/ws/operator"):
            async with connect_tcp(f"{served.ws_url}{path}") as client:
                for _ in range(3):
                    await client.ws.send_message(deep)
                    error = await client.expect("error")
                    assert error["code"] == "bad_json", error
                await _still_open(client)
        assert "Traceback" not in served.log() and "RecursionError" not in served.log()


async def test_a_folder_cursor_out_of_range_is_refused(tmp_path: Path, postgres_dsn: str) -> None:
    async with serving(tmp_path, postgres_dsn, server=NATIVE) as served:
        async with connect_tcp(f"{served.ws_url}/ws/operator") as alice:
            await login(alice, ALICE)
            for cursor in (
                "0001-01-01T00:00:00+14:00|c1",
                "9999-12-31T23:59:59-14:00|c1",
                "1969-12-31T23:59:59+00:00|c1",
            ):
                await alice.send("folder", name="out_of_hours", cursor=cursor)
                error = await alice.expect("error")
                assert error["code"] == "invalid_cursor", (cursor, error)
            # A cursor in range is a cursor: the folder (empty) comes back.
            await alice.send("folder", name="out_of_hours", cursor="2026-01-01T00:00:00+00:00|c1")
            assert (await alice.expect("folder"))["conversations"] == []
            await _still_open(alice)
        assert "Traceback" not in served.log()


async def test_captcha_checks_are_limited_per_address_and_failures_reported_once(
    tmp_path: Path, postgres_dsn: str
) -> None:
    async with siteverify() as provider:
        provider.mode = "error"  # the provider is down
        server = (
            f"{NATIVE}\n"
            f'captcha = {{ verify_url = "{provider.url}", secret = "{SECRET}", timeout = 2 }}\n'
            "limits = { captchas_per_minute = 4 }"
        )
        async with serving(tmp_path, postgres_dsn, server=server) as served:
            # Service 25 asks for a CAPTCHA from now on (a live change).
            auth = {"Authorization": f"Bearer {ADMIN}"}
            async with httpx.AsyncClient(base_url=served.http_url, headers=auth) as api:
                body = (await api.get("/api/v1/services/25")).json()
                reply = await api.put("/api/v1/services/25", json={**body, "captcha": True})
                assert reply.status_code == 200, reply.text
            codes = []
            for _ in range(6):
                async with connect_tcp(f"{served.ws_url}/ws/visitor") as vera:
                    answer = await start_with(vera, 25, visitor={"name": "Vera"}, captcha=PASSED)
                    codes.append(answer["code"])
                    if answer["code"] == "rate_limited":
                        assert 0 < answer["retry_after"] <= 15
            assert codes == ["captcha_unavailable"] * 4 + ["rate_limited"] * 2
            assert len(provider.seen) == 4
            assert all(seen["remoteip"] == "127.0.0.1" for seen in provider.seen)
            assert served.log().count("CAPTCHA checks failing") == 1
