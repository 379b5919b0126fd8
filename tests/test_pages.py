"""The pages on the HTTP port (``omni.pages``): a whole server on 127.0.0.1 reached over real
HTTP (httpx) and real websockets, on a fixed clock (a Wednesday, 12:00 UTC).

What must hold: assets are served under hashed names, for ever, gzipped when the client takes
it, and nothing else under /static/ is; every page carries a strict Content-Security-Policy
whose ``frame-ancestors`` follows the service's allowed origins; the public configuration tells
the WebChat what it needs — and no secret — and follows an administrator's change at once
(its ``ETag`` too); the embed script knows the server's public origin; the WebChat's own page
may open /ws/visitor for a service that only other sites may embed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import trio_websocket

from omni.clock import Clock
from omni.config import Config
from omni.domain.configuration import item_of
from omni.domain.model import Avatar, Directory, GroupLink, Parameters, RequiredFields, Service
from omni.domain.schedule import Interval, Schedule, Week
from omni.entropy import SeededEntropy
from omni.pages.site import Openings
from omni.server import RunningServer, open_server
from tests.support import (
    T0,
    TOK_ALICE,
    TOK_BRUNO,
    TOK_CARLA,
    api_token,
    connect_tcp,
    make_config,
    start,
    start_with,
    with_items,
)

ADMIN = "admin-secret-token-Rk6Lx1Vp9Nq"
IDENTITY_SECRET = "identity-signing-key-Zq8Wm3Lk5Rt1Yp7Vx2Nc"
CAPTCHA_SECRET = "captcha-secret-Hj4Kd9Fs2Ql6"
SITE_KEY = "0x4AAAAAAAsiteKey"
TURNSTILE = "https://challenges.cloudflare.com/turnstile/v0/api.js"
SHOP = ("https://shop.example", "https://www.shop.example:8443")
CAPTCHA_CHECKS = {"verify_url": "https://captcha.test/siteverify", "secret": CAPTCHA_SECRET}
CAPTCHA_WIDGET = {"provider": "turnstile", "site_key": SITE_KEY, "script_url": TURNSTILE}
SMTP = {"host": "127.0.0.1", "port": 9, "sender": "chat@omni.test"}
HASHED = re.compile(r"^/static/.+\.[0-9a-f]{10}\.[a-z0-9]+$")
PAGE_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-cache",
    "content-type": "text/html; charset=utf-8",
}

#: Thursdays 09:00-17:00 in São Paulo (UTC-3): closed at T0, a Wednesday at 12:00 UTC.
THURSDAYS = Schedule("thursdays", "America/Sao_Paulo", Week.of({3: (Interval("09:00", "17:00"),)}))
THURSDAY_OPENING = "2026-11-26T12:00:00Z"


def pages_config(**server: Any) -> Config:
    """``make_config`` (services 25 open, 26 never open, 27 open) plus: 30, embedded by the
    shop only, with a CAPTCHA, signed identities, the e-mail required and an avatar on another
    host, in pt-BR; 31, not public; 32, open on Thursdays; 33, embedded by the shop only,
    nothing else; the installation's logo on a CDN; an admin API token."""
    services = [
        Service(
            id=30,
            name="Shop",
            links=(GroupLink(1),),
            allowed_origins=SHOP,
            captcha=True,
            identity_secret=IDENTITY_SECRET,
            avatar=Avatar("Rita", "https://img.example.com/rita.png"),
            language="pt-BR",
            required_fields=RequiredFields(email=True),
        ),
        Service(
            id=31,
            name="Hidden",
            links=(GroupLink(1),),
            public=False,
            avatar=Avatar("Ivo", "https://hidden.example.net/ivo.png"),
        ),
        Service(id=32, name="Thursday", links=(GroupLink(1),), schedule="thursdays"),
        Service(id=33, name="Embedded", links=(GroupLink(1),), allowed_origins=SHOP),
    ]
    return with_items(
        make_config(**server),
        api_token("root", ADMIN),
        item_of("schedules", THURSDAYS),
        *(item_of("services", s) for s in services),
        item_of("parameters", Parameters(logo="https://cdn.example.org/logo.svg")),
    )


@pytest.fixture
async def srv() -> AsyncIterator[RunningServer]:
    """A server with a CAPTCHA its pages can show and an SMTP server (never reached)."""
    config = pages_config(captcha={**CAPTCHA_CHECKS, **CAPTCHA_WIDGET}, smtp=SMTP)
    async with open_server(
        config, clock=Clock(T0), entropy=SeededEntropy(5), host="127.0.0.1", ws_port=0, http_port=0
    ) as running:
        yield running


@pytest.fixture
async def http(srv: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=srv.http_url, timeout=10) as client:
        yield client


def csp(response: httpx.Response) -> dict[str, str]:
    """The response's Content-Security-Policy, by directive."""
    directives = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    return dict(d.split(" ", 1) for d in directives)


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', page)


# -- assets -----------------------------------------------------------------------------------


async def test_the_webchat_page_loads_its_assets_by_hashed_names_cached_for_ever(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/webchat")
    urls = asset_urls(page.text)
    assert len(urls) >= 2  # the script and the stylesheet
    for url in urls:
        assert HASHED.match(url), url
        r = await http.get(url)
        assert r.status_code == 200, url
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["x-content-type-options"] == "nosniff"
        expected = "text/javascript" if url.endswith(".js") else "text/css"
        assert r.headers["content-type"] == f"{expected}; charset=utf-8"


async def test_assets_are_gzipped_when_the_client_accepts_it(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    assert srv.pages is not None
    packed = [a for a in srv.pages.assets.values() if a.gzipped is not None]
    assert packed, "no asset compresses"
    for asset in packed:
        zipped = await http.get(asset.url, headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["vary"] == "Accept-Encoding"
        assert int(zipped.headers["content-length"]) == len(asset.gzipped or b"")
        assert zipped.content == asset.body  # httpx decompressed it
        for refusal in ("identity", "gzip;q=0, br", ""):
            plain = await http.get(asset.url, headers={"Accept-Encoding": refusal})
            assert "content-encoding" not in plain.headers
            assert plain.headers["vary"] == "Accept-Encoding"
            assert plain.content == asset.body


@pytest.mark.parametrize(
    "path",
    [
        "/static/webchat/main.js",  # the logical name
        "/static/webchat/main.0123456789.js",  # a hash that is not the file's
        "/static/webchat/nothing.0123456789.js",
        "/static/",
        "/static/%2e%2e/server.py",
        "/static/webchat/../../server.py",
    ],
)
async def test_anything_but_a_hashed_asset_is_not_found(http: httpx.AsyncClient, path: str) -> None:
    r = await http.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


# -- the WebChat's page ----------------------------------------------------------------------


async def test_a_service_that_lists_no_origins_may_be_embedded_by_any_page(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    r = await http.get("/webchat", params={"service": "25"})
    assert r.status_code == 200
    assert {k: r.headers[k] for k in PAGE_HEADERS} == PAGE_HEADERS
    assert r.headers["content-security-policy"] == (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data: https://cdn.example.org; font-src 'self'; "
        f"connect-src 'self' ws://127.0.0.1:{srv.ws_port}; "
        "base-uri 'none'; form-action 'self'; frame-ancestors *"
    )
    assert '<body data-service="25">' in r.text


async def test_a_service_with_allowed_origins_and_a_captcha(http: httpx.AsyncClient) -> None:
    r = await http.get("/webchat", params={"service": "30"})
    policy = csp(r)
    assert policy["frame-ancestors"] == " ".join(SHOP)
    assert policy["script-src"] == "'self' https://challenges.cloudflare.com"
    assert policy["frame-src"] == "https://challenges.cloudflare.com"
    assert policy["style-src"] == "'self'"
    assert policy["img-src"] == "'self' data: https://cdn.example.org https://img.example.com"
    assert policy["default-src"] == "'none'"
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    # Service 33 lists the same origins and asks for no CAPTCHA: no provider in its policy.
    policy = csp(await http.get("/webchat?service=33"))
    assert policy["frame-ancestors"] == " ".join(SHOP)
    assert policy["script-src"] == "'self'"
    assert "frame-src" not in policy


async def test_the_page_of_no_service_is_embedded_by_omni_only(http: httpx.AsyncClient) -> None:
    """It lists the public services: their images and CAPTCHA are allowed, not the hidden
    service's."""
    r = await http.get("/webchat")
    assert r.status_code == 200
    assert "data-service" not in r.text
    policy = csp(r)
    assert policy["frame-ancestors"] == "'self'"
    assert policy["script-src"] == "'self' https://challenges.cloudflare.com"
    assert "https://img.example.com" in policy["img-src"]
    assert "hidden.example.net" not in policy["img-src"]


@pytest.mark.parametrize(
    ("query", "attribute"),
    [
        ("abc", None),
        ("", None),
        ("025", None),
        ("-25", None),
        ("99999999999", None),
        ("<script>", None),
        ("999", ' data-service="999"'),  # a well-formed id: the script asks, and tells
    ],
)
async def test_a_bad_service_id_still_gets_the_page(
    http: httpx.AsyncClient, query: str, attribute: str | None
) -> None:
    r = await http.get("/webchat", params={"service": query})
    assert r.status_code == 200
    assert f"<body{attribute or ''}>" in r.text
    assert "<script>" not in r.text
    assert csp(r)["frame-ancestors"] == "'self'"


@pytest.mark.parametrize(
    ("service", "accept_language", "lang"),
    [
        ("25", None, "en"),
        ("25", "pt-BR,pt;q=0.9,en;q=0.8", "pt-BR"),
        ("25", "pt-PT", "pt-BR"),
        ("25", "fr, en-GB;q=0.8, pt;q=0.5", "en"),
        ("25", "fr, pt;q=0.9, en;q=0.8", "pt-BR"),
        ("25", "de", "en"),
        ("25", "pt;q=0, en", "en"),
        ("30", "en-US", "pt-BR"),  # the service says pt-BR, whatever the browser
        ("", "pt-BR", "pt-BR"),
    ],
)
async def test_the_page_language(
    http: httpx.AsyncClient, service: str, accept_language: str | None, lang: str
) -> None:
    headers = {"Accept-Language": accept_language} if accept_language else {}
    r = await http.get("/webchat", params={"service": service}, headers=headers)
    assert f'<html lang="{lang}">' in r.text
    assert r.headers["vary"] == "Accept-Language, Accept-Encoding"


# -- the public configuration ----------------------------------------------------------------


async def test_the_list_of_services_hides_the_ones_that_are_not_public(
    http: httpx.AsyncClient,
) -> None:
    r = await http.get("/api/public/services")
    assert r.status_code == 200
    assert r.json() == {
        "services": [
            {
                "id": 25,
                "name": "Support",
                "avatar": {"name": "Ana", "image": "/ana.png"},
                "open": True,
            },
            {
                "id": 26,
                "name": "Closed service",
                "avatar": {"name": "Closed service", "image": ""},
                "open": False,
            },
            {
                "id": 27,
                "name": "No survey",
                "avatar": {"name": "No survey", "image": ""},
                "open": True,
            },
            {
                "id": 30,
                "name": "Shop",
                "avatar": {"name": "Rita", "image": "https://img.example.com/rita.png"},
                "open": True,
            },
            {
                "id": 32,
                "name": "Thursday",
                "avatar": {"name": "Thursday", "image": ""},
                "open": False,
            },
            {
                "id": 33,
                "name": "Embedded",
                "avatar": {"name": "Embedded", "image": ""},
                "open": True,
            },
        ]
    }
    # Not listed, but reachable by its id.
    assert (await http.get("/api/public/services/31")).json()["name"] == "Hidden"


async def test_a_service_configuration(srv: RunningServer, http: httpx.AsyncClient) -> None:
    r = await http.get("/api/public/services/30")
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers
    assert r.headers["cache-control"] == "no-cache"
    assert "content-security-policy" not in r.headers
    assert r.json() == {
        "id": 30,
        "name": "Shop",
        "avatar": {"name": "Rita", "image": "https://img.example.com/rita.png"},
        "logo": "https://cdn.example.org/logo.svg",
        "palette": {
            "button": "#0b5fff",
            "header": "#0b5fff",
            "panels": "#ffffff",
            "visitor_bubble": "#e8f0ff",
            "operator_bubble": "#f1f1f1",
        },
        "required_fields": {"email": True, "phone": False},
        "identity": True,
        "captcha": CAPTCHA_WIDGET,
        "survey": "default",
        "transcript": True,
        "open": True,
        "opens_at": None,
        "language": "pt-BR",
        "ws_url": f"ws://127.0.0.1:{srv.ws_port}/ws/visitor",
        "attachments": None,  # this server takes no files (the default)
    }


async def test_open_and_the_next_opening_on_the_servers_clock(http: httpx.AsyncClient) -> None:
    thursday = (await http.get("/api/public/services/32")).json()
    assert (thursday["open"], thursday["opens_at"]) == (False, THURSDAY_OPENING)
    never = (await http.get("/api/public/services/26")).json()
    assert (never["open"], never["opens_at"]) == (False, None)
    always = (await http.get("/api/public/services/25")).json()
    assert (always["open"], always["opens_at"]) == (True, None)
    # Asked again (the answer kept), the same.
    again = (await http.get("/api/public/services/32")).json()
    assert again["opens_at"] == THURSDAY_OPENING


@pytest.mark.parametrize("key", ["999", "abc", "0", "25.0", "%20"])
async def test_an_unknown_service_is_not_found(http: httpx.AsyncClient, key: str) -> None:
    r = await http.get(f"/api/public/services/{key}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.json()["status"] == 404


async def test_revalidation_by_etag(http: httpx.AsyncClient) -> None:
    for path in ("/api/public/services", "/api/public/services/25"):
        first = await http.get(path)
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}\.gz"', etag)  # httpx takes gzip
        for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = await http.get(path, headers={"If-None-Match": sent})
            assert again.status_code == 304, sent
            assert again.content == b""
            assert again.headers["etag"] == etag
            assert again.headers["access-control-allow-origin"] == "*"
        other = await http.get(path, headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200
        assert other.content == first.content


async def test_an_administrators_change_shows_on_the_next_load(http: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    before = await http.get("/api/public/services/25")
    listed = await http.get("/api/public/services")
    service = (await http.get("/api/v1/services/25", headers=admin)).json()
    r = await http.put("/api/v1/services/25", json={**service, "name": "Help"}, headers=admin)
    assert r.status_code == 200, r.text
    after = await http.get(
        "/api/public/services/25", headers={"If-None-Match": before.headers["etag"]}
    )
    assert after.status_code == 200
    assert after.json()["name"] == "Help"
    assert after.headers["etag"] != before.headers["etag"]
    relisted = await http.get(
        "/api/public/services", headers={"If-None-Match": listed.headers["etag"]}
    )
    assert relisted.status_code == 200
    assert relisted.json()["services"][0]["name"] == "Help"

    parameters = {
        "palette": {"button": "#112233", "header": "#445566"},
        "logo": "/logo.png",
        "all_fields_required": True,
    }
    r = await http.put("/api/v1/parameters", json=parameters, headers=admin)
    assert r.status_code == 200, r.text
    changed = await http.get("/api/public/services/25")
    assert changed.headers["etag"] != after.headers["etag"]
    body = changed.json()
    assert body["palette"]["button"] == "#112233"
    assert body["palette"]["header"] == "#445566"
    assert body["palette"]["panels"] == "#ffffff"
    assert body["logo"] == "/logo.png"
    assert body["required_fields"] == {"email": True, "phone": True}
    # The page follows too: the logo is on Omni now, no other origin for it.
    assert csp(await http.get("/webchat?service=25"))["img-src"] == "'self' data:"


async def test_no_public_response_carries_a_secret(
    srv: RunningServer, http: httpx.AsyncClient
) -> None:
    """Secrets never leave: not in a body, not in a header. The allowed origins are in the
    WebChat's ``frame-ancestors`` (that is their purpose), nowhere else."""
    responses: list[tuple[str, httpx.Response]] = []
    for path in ["/api/public/services", "/widget.js", "/webchat"]:
        responses.append((path, await http.get(path)))
    for service_id in srv.hub.directory.services:
        for path in (f"/api/public/services/{service_id}", f"/webchat?service={service_id}"):
            responses.append((path, await http.get(path)))
    assert srv.pages is not None
    for asset in srv.pages.assets.values():
        responses.append((asset.url, await http.get(asset.url)))
    operators = srv.hub.directory.operators.values()
    secrets = [
        IDENTITY_SECRET,
        CAPTCHA_SECRET,
        ADMIN,
        TOK_ALICE,
        TOK_BRUNO,
        TOK_CARLA,
        "token_hash",
        "identity_secret",
        *(o.token_hash for o in operators),
        *(t.token_hash for t in srv.hub.directory.api_tokens.values()),
    ]
    for path, r in responses:
        assert r.status_code == 200, path
        seen = r.text + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
        for secret in secrets:
            assert secret not in seen, (path, secret)
        body = r.text
        if path.startswith("/webchat"):
            body += "".join(v for k, v in r.headers.items() if k != "content-security-policy")
        else:
            body += "".join(r.headers.values())
        for origin in SHOP:
            assert origin.split("//")[1] not in body, (path, origin)
        assert "allowed_origins" not in body


async def test_a_captcha_the_pages_cannot_show() -> None:
    """A service asks for a CAPTCHA on a server whose ``[server.captcha]`` only checks tokens,
    or that has none: the configuration says the page cannot show one. Without SMTP, no
    transcript is offered."""
    for server in ({"captcha": CAPTCHA_CHECKS}, {}):
        async with (
            open_server(pages_config(**server), host="127.0.0.1", ws_port=0, http_port=0) as srv,
            httpx.AsyncClient(base_url=srv.http_url) as http,
        ):
            shop = (await http.get("/api/public/services/30")).json()
            assert shop["captcha"] == {"provider": None, "site_key": None, "script_url": None}
            assert shop["transcript"] is False
            assert (await http.get("/api/public/services/25")).json()["captcha"] is None
            # Nothing to allow from a provider.
            assert csp(await http.get("/webchat?service=30"))["script-src"] == "'self'"


# -- the embed script ------------------------------------------------------------------------


async def test_the_embed_script(srv: RunningServer, http: httpx.AsyncClient) -> None:
    r = await http.get("/widget.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"] == "Accept-Encoding"
    assert f'"{srv.http_url}"' in r.text
    assert "{{" not in r.text
    gzipped = {"Accept-Encoding": "gzip", "If-None-Match": r.headers["etag"]}
    assert (await http.get("/widget.js", headers=gzipped)).status_code == 304
    plain = await http.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.text == r.text
    assert plain.headers["etag"] != r.headers["etag"]  # another representation, another tag
    identity = {"Accept-Encoding": "identity", "If-None-Match": plain.headers["etag"]}
    assert (await http.get("/widget.js", headers=identity)).status_code == 304
    # A tag of the other representation does not validate this one.
    mixed = {"Accept-Encoding": "gzip", "If-None-Match": plain.headers["etag"]}
    assert (await http.get("/widget.js", headers=mixed)).status_code == 200


async def test_behind_a_proxy_the_pages_use_the_public_urls() -> None:
    config = pages_config(
        public_url="https://chat.example.com", public_ws_url="wss://chat.example.com/omni"
    )
    async with (
        open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv,
        httpx.AsyncClient(base_url=srv.http_url) as http,
    ):
        widget = await http.get("/widget.js")
        assert '"https://chat.example.com"' in widget.text
        shop = (await http.get("/api/public/services/33")).json()
        assert shop["ws_url"] == "wss://chat.example.com/omni/ws/visitor"
        policy = csp(await http.get("/webchat?service=33"))
        assert policy["connect-src"] == "'self' wss://chat.example.com"
        # The public origin is the server's own: the console and the WebChat may connect.
        assert "https://chat.example.com" in srv.gateway.console_origins
        async with connect_tcp(
            f"{srv.ws_url}/ws/visitor", origin="https://chat.example.com"
        ) as vera:
            assert (await start(vera, 33))["type"] == "started"


# -- the WebChat's own page on /ws/visitor ---------------------------------------------------


async def test_the_webchat_page_may_connect_for_a_service_other_sites_embed(
    srv: RunningServer,
) -> None:
    """Service 33 may be embedded by the shop only. The WebChat runs on Omni's origin inside
    the shop's iframe (``frame-ancestors`` keeps it there): its conversation starts. A page of
    another site still may not start one."""
    for origin in (srv.http_url, srv.http_url.replace("127.0.0.1", "localhost"), SHOP[0]):
        async with connect_tcp(f"{srv.ws_url}/ws/visitor", origin=origin) as vera:
            assert (await start(vera, 33))["type"] == "started", origin
    async with connect_tcp(f"{srv.ws_url}/ws/visitor", origin="https://evil.example") as eve:
        refused = await start_with(eve, 33, visitor={"name": "Eve"})
        assert (refused["type"], refused["code"]) == ("error", "origin_not_allowed")


async def test_a_site_no_service_accepts_is_refused_at_the_handshake() -> None:
    """When every service lists its origins, another site's page does not get a connection;
    the server's own pages do."""
    config = pages_config()
    for item in config.items:
        if item.kind == "services":
            item.body["allowed_origins"] = list(SHOP)
    config = with_items(config)
    async with open_server(config, host="127.0.0.1", ws_port=0, http_port=0) as srv:
        with pytest.raises(trio_websocket.ConnectionRejected) as refused:
            async with connect_tcp(f"{srv.ws_url}/ws/visitor", origin="https://evil.example"):
                pass
        assert refused.value.status_code == 403
        async with connect_tcp(f"{srv.ws_url}/ws/visitor", origin=srv.http_url) as vera:
            assert (await start(vera, 25))["type"] == "started"


def test_next_openings_are_kept_while_they_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public configuration asks at each load; the schedules are searched again only when
    the configuration changed, the answer has passed, or "never" is old."""
    searched: list[datetime] = []
    search = Directory.next_opening

    def counted(directory: Directory, service: Service, at: datetime) -> datetime | None:
        searched.append(at)
        return search(directory, service, at)

    monkeypatch.setattr(Directory, "next_opening", counted)
    config = pages_config()
    directory, openings = config.directory, Openings()
    thursday, never = directory.services[32], directory.services[26]
    opening = datetime.fromisoformat(THURSDAY_OPENING)
    assert openings.next_opening(directory, thursday, T0) == opening
    assert openings.next_opening(directory, thursday, T0 + timedelta(hours=20)) == opening
    assert len(searched) == 1
    # A new configuration (even an equal one): searched again.
    rebuilt = with_items(config).directory
    assert openings.next_opening(rebuilt, thursday, T0 + timedelta(hours=21)) == opening
    assert len(searched) == 2
    # Past the opening (and closed again): searched again, a week later.
    later = opening + timedelta(hours=9)
    assert openings.next_opening(rebuilt, thursday, later) == opening + timedelta(days=7)
    assert len(searched) == 3
    # "Never" is believed for a while, then asked again.
    assert openings.next_opening(rebuilt, never, T0) is None
    assert openings.next_opening(rebuilt, never, T0 + Openings.RECHECK / 2) is None
    assert len(searched) == 4
    assert openings.next_opening(rebuilt, never, T0 + Openings.RECHECK) is None
    assert len(searched) == 5


@pytest.mark.parametrize("path", ["/webchat?service=25", "/console", "/api/public/services/25"])
async def test_shells_and_the_public_configuration_are_gzipped_when_asked(
    http: httpx.AsyncClient, path: str
) -> None:
    plain = await http.get(path, headers={"Accept-Encoding": "identity"})
    packed = await http.get(path, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["vary"]
    assert packed.content == plain.content  # httpx decoded it
    assert int(packed.headers["content-length"]) < len(plain.content)
