"""F19: a CAPTCHA on entry, checked against a siteverify endpoint (the protocol reCAPTCHA,
hCaptcha and Turnstile share) — here a real HTTP server on 127.0.0.1 standing in for the
provider, reached by the real server over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import request
from quart_trio import QuartTrio

from omni.config import Config
from omni.server import open_server
from tests.support import (
    UNLIMITED,
    connect_tcp,
    free_port,
    make_config,
    start_with,
    with_service,
)

SECRET = "provider-secret-key"
PASSED = "token-of-a-passed-challenge"


@dataclass
class Provider:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)
    #: How the endpoint answers: "json" (the protocol), "error" (HTTP 500), "garbage".
    mode: str = "json"


@asynccontextmanager
async def siteverify() -> AsyncIterator[Provider]:
    app = QuartTrio("siteverify")
    provider = Provider("")

    @app.post("/siteverify")
    async def verify() -> Any:
        form = await request.form
        provider.seen.append(dict(form))
        if provider.mode == "error":
            return "unavailable", 500
        if provider.mode == "garbage":
            return "<html>not json</html>", 200
        ok = form.get("secret") == SECRET and form.get("response") == PASSED
        return {"success": ok, "error-codes": [] if ok else ["invalid-input-response"]}

    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(app, config, shutdown_trigger=stop.wait, task_status=task_status)

        binds: list[str] = await nursery.start(run)
        provider.url = f"{binds[0]}/siteverify"
        try:
            yield provider
        finally:
            stop.set()


def captcha_config(url: str | None) -> Config:
    server: dict[str, Any] = {}
    if url is not None:
        server["captcha"] = {"verify_url": url, "secret": SECRET, "timeout": 2}
    return with_service(make_config(**server), 27, lambda body: body.update(captcha=True))


VERA = {"name": "Vera"}


async def test_a_service_that_asks_for_a_captcha() -> None:
    async with (
        siteverify() as provider,
        open_server(captcha_config(provider.url), host="127.0.0.1", ws_port=0, http=False) as srv,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        error = await start_with(vera, 27, visitor=VERA)
        assert error["code"] == "captcha_required", error
        assert provider.seen == []  # nothing to check
        error = await start_with(vera, 27, visitor=VERA, captcha="a-made-up-token")
        assert error["code"] == "captcha_failed", error
        # The visitor's address goes along (``remoteip``): the provider weighs it too.
        assert provider.seen == [
            {"secret": SECRET, "response": "a-made-up-token", "remoteip": "127.0.0.1"}
        ]
        assert srv.hub.store.conversations() == []  # type: ignore[attr-defined]
        started = await start_with(vera, 27, visitor=VERA, captcha=PASSED)
        assert started["type"] == "started", started
        assert provider.seen[-1] == {"secret": SECRET, "response": PASSED, "remoteip": "127.0.0.1"}
        # A service that does not ask: no token needed, nobody asked.
        async with connect_tcp(f"{srv.ws_url}/ws/visitor") as will:
            assert (await start_with(will, 25, visitor=VERA))["type"] == "started"
        assert len(provider.seen) == 2


async def test_a_captcha_that_cannot_be_checked_refuses_the_start() -> None:
    async with siteverify() as provider:
        unreachable = f"http://127.0.0.1:{free_port()}/siteverify"
        for url, mode in (
            (unreachable, "json"),
            (provider.url, "error"),
            (provider.url, "garbage"),
        ):
            provider.mode = mode
            async with (
                open_server(captcha_config(url), host="127.0.0.1", ws_port=0, http=False) as srv,
                connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
            ):
                error = await start_with(vera, 27, visitor=VERA, captcha=PASSED)
                assert error["code"] == "captcha_unavailable", (url, mode, error)
                assert error["message"] == "the CAPTCHA could not be checked; try again"
                assert srv.hub.store.conversations() == []  # type: ignore[attr-defined]
        assert len(provider.seen) == 2


async def test_a_captcha_service_on_a_server_without_a_verifier() -> None:
    async with (
        open_server(captcha_config(None), host="127.0.0.1", ws_port=0, http=False) as srv,
        connect_tcp(f"{srv.ws_url}/ws/visitor") as vera,
    ):
        error = await start_with(vera, 27, visitor=VERA, captcha=PASSED)
        assert error["code"] == "captcha_unavailable"
        assert "checks none" in error["message"]


async def test_captcha_checks_are_limited_per_address_and_failures_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each check is a call to the provider that a stranger causes: one address gets
    ``captchas_per_minute`` of them; a provider that is down is reported once per interval,
    not once per visitor."""
    async with siteverify() as provider:
        config = captcha_config(provider.url)
        limits = {**UNLIMITED, "captchas_per_minute": 3}
        config = with_service(
            make_config(captcha=config.server.captcha, limits=limits),
            27,
            lambda body: body.update(captcha=True),
        )
        async with open_server(config, host="127.0.0.1", ws_port=0, http=False) as srv:
            provider.mode = "error"
            codes = []
            for _ in range(5):
                async with connect_tcp(f"{srv.ws_url}/ws/visitor") as vera:
                    codes.append(await start_with(vera, 27, visitor=VERA, captcha=PASSED))
            assert [c["code"] for c in codes] == ["captcha_unavailable"] * 3 + ["rate_limited"] * 2
            assert 0 < codes[-1]["retry_after"] <= 20
            assert len(provider.seen) == 3  # the refused ones never reached the provider
            failures = [r for r in caplog.records if "CAPTCHA" in r.getMessage()]
            assert len(failures) == 1, [r.getMessage() for r in failures]
